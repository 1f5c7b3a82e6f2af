"""PII detection and masking (validated kinds), and per-tenant pseudonyms."""

from __future__ import annotations

import pytest

from chatlake.pii import (
    find_pii,
    iban_valid,
    luhn_valid,
    mask_pii,
    pseudonymize,
    tenant_pseudonym_key,
)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail ana.b@example.com today", "mail [EMAIL] today"),
        ("card 4111 1111 1111 1111 please", "card [CARD] please"),
        ("card 5500-0000-0000-0004", "card [CARD]"),
        ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN [IBAN] ok"),
        ("GB82WEST12345698765432", "[IBAN]"),
        ("call +49 30 1234567 or (030) 123-4567", "call [PHONE] or [PHONE]"),
        ("from 192.168.1.20", "from [IP]"),
    ],
)
def test_each_kind_is_masked_with_its_placeholder(text, masked):
    assert mask_pii(text)[0] == masked


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112",  # 16 digits failing Luhn: an order number, not a card
        "ref DE89370400440532013001",  # IBAN shape, wrong check digits
        "order 12345 on 2024-05-01 at 10:30, or 01/05/2024",
        "nothing to see here",
        "",
    ],
)
def test_look_alikes_are_left_alone(text):
    assert mask_pii(text) == (text, 0)


def test_findings_do_not_overlap_and_are_counted():
    text = "a@b.io, 4111111111111111 and DE89370400440532013000"
    masked, count = mask_pii(text)
    assert masked == "[EMAIL], [CARD] and [IBAN]" and count == 3
    assert [f.kind for f in find_pii(text)] == ["email", "card", "iban"]


def test_checksums():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid(
        "DE00 3704 0044 0532 0130 00"
    )


def test_pseudonyms_are_stable_per_tenant_and_unlinkable_across_tenants():
    key_a, key_b = tenant_pseudonym_key("k", "tenant-a"), tenant_pseudonym_key("k", "tenant-b")
    assert pseudonymize("ana", key_a) == pseudonymize("ana", key_a)
    assert pseudonymize("ana", key_a) != pseudonymize("ana", key_b)
    assert pseudonymize("ana", key_a) != pseudonymize("ana", tenant_pseudonym_key("k2", "tenant-a"))
    assert "ana" not in pseudonymize("ana", key_a) and len(pseudonymize("ana", key_a)) == 32
