"""Entities: the tenant's own (regular expressions, lookup lists) and built-ins (numbers,
emails, phone numbers, dates, amounts).

Each entity is `{entity, value, text, start, end}`; `value` is normalised (a number, an ISO
date, an amount with its currency) and `text` is what the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

import re2

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,}\d(?!\w)")
ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
DMY_DATE = re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4})\b")
CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "usd": "USD", "eur": "EUR", "gbp": "GBP"}
AMOUNT = re.compile(
    r"(?P<pre>[$€£])\s?(?P<a>\d+(?:[.,]\d{1,2})?)"
    r"|(?P<b>\d+(?:[.,]\d{1,2})?)\s?(?P<post>[$€£]|usd|eur|gbp)\b",
    re.IGNORECASE,
)
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?![\w])")


def _number(text: str) -> float | int:
    value = float(text.replace(",", "."))
    return int(value) if value.is_integer() else value


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is the caller's error, not a log line
    options.case_sensitive = False
    options.max_mem = 8 << 20  # bounds the compiled program (e.g. huge repetition counts)
    return options


_RE2_OPTIONS = _re2_options()


def compile_tenant_pattern(pattern: str) -> Any:
    """Compile a tenant's pattern with RE2; raises ValueError with RE2's reason."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"not a supported regular expression (RE2 syntax): {reason}") from None


@dataclass(frozen=True)
class TenantEntity:
    """A tenant's own entity: a regular expression, or a lookup list of values (each value
    may list synonyms that normalise to it)."""

    name: str
    pattern: str | None = None
    lookup: dict[str, list[str]] | None = None

    @cached_property
    def regex(self) -> Any:  # an RE2 pattern: finditer() yields re-like matches
        if self.pattern is not None:
            try:
                return compile_tenant_pattern(self.pattern)
            except ValueError:  # stored before RE2 checked it at the API: matches nothing
                return compile_tenant_pattern(r"[^\x00-\x{10FFFF}]")
        assert self.lookup is not None
        forms = sorted(
            {form for value, synonyms in self.lookup.items() for form in [value, *synonyms]},
            key=len,
            reverse=True,
        )
        return compile_tenant_pattern(r"\b(" + "|".join(map(re.escape, forms)) + r")\b")

    def value(self, matched: str) -> str:
        if self.lookup is None:
            return matched
        lowered = matched.lower()
        for value, synonyms in self.lookup.items():
            if lowered == value.lower() or lowered in (s.lower() for s in synonyms):
                return value
        return matched


def extract_entities(
    text: str, tenant_entities: Sequence[TenantEntity] = ()
) -> list[dict[str, Any]]:
    """Tenant entities first (they are more specific), then the built-ins."""
    found: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []

    def add(name: str, match: Any, value: Any) -> None:
        start, end = match.span()
        if any(start < e and s < end for s, e in taken):
            return
        taken.append((start, end))
        found.append(
            {"entity": name, "value": value, "text": match.group(0), "start": start, "end": end}
        )

    for entity in tenant_entities:
        for match in entity.regex.finditer(text):
            add(entity.name, match, entity.value(match.group(0)))
    for match in EMAIL.finditer(text):
        add("email", match, match.group(0).lower())
    for match in ISO_DATE.finditer(text):
        try:
            add("date", match, date(*map(int, match.groups())).isoformat())
        except ValueError:
            pass
    for match in DMY_DATE.finditer(text):
        day, month, year = map(int, match.groups())
        try:
            add("date", match, date(year, month, day).isoformat())
        except ValueError:
            pass
    for match in AMOUNT.finditer(text):
        amount = match.group("a") or match.group("b")
        currency = CURRENCIES[(match.group("pre") or match.group("post")).lower()]
        add("amount", match, {"value": _number(amount), "currency": currency})
    for match in PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if 7 <= len(digits) <= 15:
            add("phone_number", match, ("+" if match.group(0).startswith("+") else "") + digits)
    for match in NUMBER.finditer(text):
        add("number", match, _number(match.group(0)))
    return sorted(found, key=lambda e: e["start"])
