"""Secrets at rest: AES-256-GCM envelope encryption under `CHATLAKE_MASTER_KEY`.

Each secret gets its own random 256-bit data key; the secret is sealed with the data key,
and the data key is sealed with the key-encryption key derived from the master key
(HKDF-SHA256). Only the sealed form is stored:
`v1.<kek id>.<wrapped data key>.<sealed secret>` (base64url). The tenant id is bound in as
associated data, so a sealed value copied to another tenant will not open.

Rotating the master key, without downtime:
1. run every process with the new `CHATLAKE_MASTER_KEY` and the old one in
   `CHATLAKE_MASTER_KEY_PREVIOUS` (they open secrets under either, seal under the new);
2. `chatlake secrets rotate` re-wraps every stored data key under the new master key (the
   secrets themselves are not re-encrypted);
3. drop `CHATLAKE_MASTER_KEY_PREVIOUS`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from chatlake.errors import ChatlakeError
from chatlake.settings import Settings

VERSION = "v1"


class SecretError(ChatlakeError):
    """A sealed secret cannot be opened (wrong master key, wrong tenant, or tampered)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kek(master_key: str) -> tuple[str, bytes]:
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"chatlake kek v1").derive(
        master_key.encode()
    )
    return hashlib.sha256(kek).hexdigest()[:8], kek


class SecretBox:
    """Seals under `master_key`; opens what was sealed under it or any of `previous`."""

    def __init__(self, master_key: str, previous: Sequence[str] = ()) -> None:
        self.kek_id, self.kek = _kek(master_key)
        self.keks = dict(_kek(key) for key in previous) | {self.kek_id: self.kek}

    def seal(self, plaintext: str, context: str) -> str:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce_key, nonce_data = os.urandom(12), os.urandom(12)
        wrapped = nonce_key + AESGCM(self.kek).encrypt(nonce_key, data_key, context.encode())
        sealed = nonce_data + AESGCM(data_key).encrypt(
            nonce_data, plaintext.encode(), context.encode()
        )
        return ".".join([VERSION, self.kek_id, _b64(wrapped), _b64(sealed)])

    def _data_key(self, token: str, context: str) -> tuple[bytes, bytes]:
        try:
            version, kek_id, wrapped_b64, sealed_b64 = token.split(".")
        except ValueError:
            raise SecretError("not a sealed secret") from None
        kek = self.keks.get(kek_id)
        if version != VERSION or kek is None:
            raise SecretError("sealed under another master key")
        wrapped, sealed = _unb64(wrapped_b64), _unb64(sealed_b64)
        try:
            data_key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], context.encode())
        except InvalidTag:
            raise SecretError("the sealed secret does not open here") from None
        return data_key, sealed

    def open(self, token: str, context: str) -> str:
        data_key, sealed = self._data_key(token, context)
        try:
            return AESGCM(data_key).decrypt(sealed[:12], sealed[12:], context.encode()).decode()
        except InvalidTag:
            raise SecretError("the sealed secret does not open here") from None

    def is_current(self, token: str) -> bool:
        return token.split(".")[1:2] == [self.kek_id]

    def rewrap(self, token: str, context: str) -> str:
        """The same secret with its data key wrapped under the current master key."""
        data_key, sealed = self._data_key(token, context)
        nonce_key = os.urandom(12)
        wrapped = nonce_key + AESGCM(self.kek).encrypt(nonce_key, data_key, context.encode())
        return ".".join([VERSION, self.kek_id, _b64(wrapped), _b64(sealed)])


def secret_box(settings: Settings) -> SecretBox:
    """The box for this deployment: the master key, and any previous ones during a rotation."""
    return SecretBox(settings.secret("master_key"), settings.previous_master_keys())


# Where sealed secrets live: (table, JSON column, key inside each array element).
SEALED_JSON_ARRAYS = [("model_chains", "tiers", "sealed_api_key")]


def rotate(conn: psycopg.Connection[Any], box: SecretBox) -> dict[str, int]:
    """Re-wrap every stored secret that is not under `box`'s current master key.

    Runs as the schema owner (all tenants) in one transaction: all re-wrapped or none.
    A secret that opens under none of the box's keys stops the rotation (SecretError)."""
    counts = {"rewrapped": 0, "current": 0, "tenants": 0}
    with conn.transaction():
        for table, column, key in SEALED_JSON_ARRAYS:
            rows = (
                conn.cursor(row_factory=tuple_row)
                .execute(
                    sql.SQL("select tenant_id, {} from {} for update").format(
                        sql.Identifier(column), sql.Identifier(table)
                    )
                )
                .fetchall()
            )
            for tenant_id, items in rows:
                changed = False
                for item in items:
                    token = item.get(key)
                    if token is None:
                        continue
                    if box.is_current(token):
                        counts["current"] += 1
                    else:
                        item[key] = box.rewrap(token, str(tenant_id))
                        counts["rewrapped"] += 1
                        changed = True
                if changed:
                    counts["tenants"] += 1
                    conn.execute(
                        sql.SQL("update {} set {} = %s where tenant_id = %s").format(
                            sql.Identifier(table), sql.Identifier(column)
                        ),
                        (Jsonb(items), tenant_id),
                    )
        # channels' secrets: one object of sealed values per tenant and channel
        channels = (
            conn.cursor(row_factory=tuple_row)
            .execute("select tenant_id, channel, sealed_secrets from channel_configs for update")
            .fetchall()
        )
        for tenant_id, channel, sealed in channels:
            context = f"{tenant_id}:channel:{channel}"
            stale = {name: token for name, token in sealed.items() if not box.is_current(token)}
            counts["current"] += len(sealed) - len(stale)
            if stale:
                sealed.update({name: box.rewrap(t, context) for name, t in stale.items()})
                counts["rewrapped"] += len(stale)
                conn.execute(
                    "update channel_configs set sealed_secrets = %s "
                    "where tenant_id = %s and channel = %s",
                    (Jsonb(sealed), tenant_id, channel),
                )
        # dashboards admins' TOTP secrets (chatlake/users.py seals them per user)
        users = conn.execute(
            "select user_id::text, totp_sealed from users where totp_sealed is not null for update"
        ).fetchall()
        for row in users:
            user_id, token = (row["user_id"], row["totp_sealed"]) if isinstance(row, dict) else row
            if box.is_current(token):
                counts["current"] += 1
                continue
            conn.execute(
                "update users set totp_sealed = %s where user_id = %s",
                (box.rewrap(token, f"users:{user_id}:totp"), user_id),
            )
            counts["rewrapped"] += 1
    return counts


def derived_key(secret: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived (HKDF-SHA256) from a platform secret: keys
    for different purposes are independent, and none reveals the secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )
