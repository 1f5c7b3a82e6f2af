from uuid import uuid4

from chatlake.apikeys import display_prefix, key_digest, new_api_key, parse_api_key


def test_a_new_key_parses_back_to_its_tenant():
    tenant_id = str(uuid4())
    key = new_api_key(tenant_id)
    parsed = parse_api_key(key)
    assert parsed is not None
    assert parsed.tenant_id == tenant_id
    assert parsed.digest == key_digest(key)


def test_two_keys_of_one_tenant_differ():
    tenant_id = uuid4()
    assert new_api_key(tenant_id) != new_api_key(tenant_id)


def test_malformed_keys_are_refused():
    good = new_api_key(uuid4())
    for bad in (
        "",
        "clk",
        "clk_nothex_" + "a" * 43,
        "xyz" + good[3:],
        good.rsplit("_", 1)[0][:40],  # secret cut off
        good.replace("clk_", "clk_" + "0", 1),  # tenant part no longer a 32-hex uuid
    ):
        assert parse_api_key(bad) is None, bad


def test_display_prefix_does_not_reveal_the_secret():
    key = new_api_key(uuid4())
    shown = display_prefix(key)
    secret = key.split("_", 2)[2]
    assert secret[:-4] not in shown
