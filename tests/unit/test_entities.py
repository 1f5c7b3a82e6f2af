"""Entities: built-ins and tenant patterns, which run on RE2 (no catastrophic backtracking)."""

from __future__ import annotations

import pytest

from nlu.entities import TenantEntity, compile_tenant_pattern, extract_entities


def test_a_catastrophic_pattern_answers_at_once():
    # With backtracking (Python's re) this pattern takes 2^40 steps on this text.
    evil = TenantEntity("evil", pattern=r"(a+)+$")
    found = extract_entities("a" * 40 + "!", [evil])
    assert not [e for e in found if e["entity"] == "evil"]
    assert extract_entities("aaaa", [evil])[0]["text"] == "aaaa"


def test_tenant_patterns_ignore_case_and_lookups_normalise():
    sku = TenantEntity("sku", pattern=r"sku-\d{4}")
    colour = TenantEntity("colour", lookup={"red": ["crimson", "scarlet"]})
    found = {
        e["entity"]: e["value"] for e in extract_entities("SKU-1234 in Crimson", [sku, colour])
    }
    assert found == {"sku": "SKU-1234", "colour": "red"}


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?<=x)y", "(unclosed"])
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern):
    with pytest.raises(ValueError, match="RE2"):
        compile_tenant_pattern(pattern)


def test_a_stored_pattern_re2_refuses_matches_nothing():
    assert extract_entities("x y", [TenantEntity("old", pattern=r"(?<=x) y")]) == []
