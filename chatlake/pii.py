"""PII detection, masking and pseudonymization, shared by the pipelines (silver) and the
realtime path.

Detected: email addresses, payment card numbers (13 to 19 digits, Luhn-valid), IBANs
(country code, check digits, ISO 13616 mod-97 valid), phone numbers (7 to 15 digits,
optionally +country and separators) and IPv4 addresses. Validated kinds are checked before
they are masked, so an order number is not a card and a random code is not an IBAN. Each
finding is replaced by a typed placeholder (`[EMAIL]`, `[CARD]`, …), so masked text still
reads naturally for analysts and for intent training.

User ids are pseudonymized with HMAC-SHA256 under a per-tenant key derived from the
platform's pseudonym key: stable within a tenant (joins and distinct counts still work),
unlinkable across tenants, and not reversible without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
PHONE = re.compile(r"(?<![\w+(])(?:\+|\()?\d[\d ().-]{5,}\d(?!\w)")
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")


@dataclass(frozen=True)
class Finding:
    kind: str  # email, iban, card, phone, ip
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}")


def _phone(match: str) -> bool:
    return 7 <= sum(c.isdigit() for c in match) <= 15 and not DATE_LIKE.fullmatch(match)


_DETECTORS = (  # in order: a span taken by an earlier kind is not looked at again
    ("email", EMAIL, None),
    ("iban", IBAN, iban_valid),
    ("card", CARD, _card),
    ("ip", IPV4, None),
    ("phone", PHONE, _phone),
)


def find_pii(text: str) -> list[Finding]:
    """Every PII span in `text`, in order, without overlaps."""
    if not text or not any(c.isdigit() or c == "@" for c in text):
        return []  # nothing to find without a digit or an @: the common case, kept fast
    found: list[Finding] = []
    for kind, pattern, valid in _DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < f.end and f.start < end for f in found):
                continue
            if valid is None or valid(match.group(0)):
                found.append(Finding(kind, start, end))
    return sorted(found, key=lambda f: f.start)


def mask_pii(text: str) -> tuple[str, int]:
    """`text` with every PII span replaced by `[KIND]`, and how many were replaced."""
    findings = find_pii(text)
    if not findings:
        return text, 0
    pieces, last = [], 0
    for finding in findings:
        pieces += [text[last : finding.start], f"[{finding.kind.upper()}]"]
        last = finding.end
    pieces.append(text[last:])
    return "".join(pieces), len(findings)


def tenant_pseudonym_key(pseudonym_key: str, tenant_id: str) -> bytes:
    """The per-tenant key: HMAC of the tenant id under the platform's pseudonym key."""
    return hmac.new(pseudonym_key.encode(), f"tenant:{tenant_id}".encode(), hashlib.sha256).digest()


def pseudonymize(user_id: str, tenant_key: bytes) -> str:
    """A stable, keyed, irreversible stand-in for `user_id` within one tenant."""
    return hmac.new(tenant_key, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def subject_digest(tenant_id: str, user_id: str) -> str:
    """The unkeyed digest (scheme `sha256`): what erasure requests, audit entries and
    certificates held before the keyed one. Anyone who guesses the id (a phone number, an
    e-mail address) can recompute it, so it only names short-lived things now (the
    in-progress mark in Redis) and finds the old entries."""
    return hashlib.sha256(f"{tenant_id}\x1f{user_id}".encode()).hexdigest()


KEYED_SCHEME = "hmac-sha256"
LEGACY_SCHEME = "sha256"


def keyed_subject_digest(key: bytes, tenant_id: str, user_id: str) -> str:
    """How erasure requests, audit entries and certificates name a data subject (scheme
    `hmac-sha256`): HMAC of tenant and user id under a platform key, so it cannot be
    reversed by trying phone numbers or e-mail addresses without that key."""
    return hmac.new(key, f"{tenant_id}\x1f{user_id}".encode(), hashlib.sha256).hexdigest()


def subject_digest_of(key: bytes, scheme: str, tenant_id: str, user_id: str) -> str:
    """The subject's digest under `scheme` (an entry's marked scheme; unmarked is legacy)."""
    if scheme == KEYED_SCHEME:
        return keyed_subject_digest(key, tenant_id, user_id)
    if scheme == LEGACY_SCHEME:
        return subject_digest(tenant_id, user_id)
    raise ValueError(f"unknown subject digest scheme {scheme!r}")
