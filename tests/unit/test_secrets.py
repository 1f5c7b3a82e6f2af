import pytest

from chatlake.secrets import SecretBox, SecretError


def test_a_sealed_secret_opens_only_with_its_key_and_context():
    box = SecretBox("master-one")
    sealed = box.seal("sk-live-123", "tenant-a")
    assert "sk-live-123" not in sealed
    assert box.open(sealed, "tenant-a") == "sk-live-123"
    with pytest.raises(SecretError):
        box.open(sealed, "tenant-b")
    with pytest.raises(SecretError):
        SecretBox("master-two").open(sealed, "tenant-a")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretError):
        box.open(tampered, "tenant-a")


def test_each_seal_uses_a_fresh_data_key():
    box = SecretBox("m")
    assert box.seal("x", "t") != box.seal("x", "t")


def test_rotation_rewraps_the_data_key_only():
    old, new = SecretBox("old-master"), SecretBox("new-master", previous=["old-master"])
    sealed = old.seal("token", "tenant")
    assert new.open(sealed, "tenant") == "token" and not new.is_current(sealed)
    rewrapped = new.rewrap(sealed, "tenant")
    assert new.is_current(rewrapped)
    assert rewrapped.split(".")[3] == sealed.split(".")[3]  # the sealed secret is untouched
    assert new.open(rewrapped, "tenant") == "token"
    with pytest.raises(SecretError):
        old.open(rewrapped, "tenant")
