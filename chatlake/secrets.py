"""Secrets at rest: AES-256-GCM envelope encryption under `CHATLAKE_MASTER_KEY`.

Each secret gets its own random 256-bit data key; the secret is sealed with the data key,
and the data key is sealed with the key-encryption key derived from the master key
(HKDF-SHA256). Only the sealed form is stored:
`v1.<kek id>.<wrapped data key>.<sealed secret>` (base64url). Rotating the master key
re-wraps the data keys (`rewrap`) without touching the secrets themselves. The tenant id
is bound in as associated data, so a sealed value copied to another tenant will not open.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chatlake.errors import ChatlakeError

VERSION = "v1"


class SecretError(ChatlakeError):
    """A sealed secret cannot be opened (wrong master key, wrong tenant, or tampered)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SecretBox:
    def __init__(self, master_key: str) -> None:
        self.kek = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"chatlake kek v1"
        ).derive(master_key.encode())
        self.kek_id = hashlib.sha256(self.kek).hexdigest()[:8]

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
        if version != VERSION or kek_id != self.kek_id:
            raise SecretError("sealed under another master key")
        wrapped, sealed = _unb64(wrapped_b64), _unb64(sealed_b64)
        try:
            data_key = AESGCM(self.kek).decrypt(wrapped[:12], wrapped[12:], context.encode())
        except InvalidTag:
            raise SecretError("the sealed secret does not open here") from None
        return data_key, sealed

    def open(self, token: str, context: str) -> str:
        data_key, sealed = self._data_key(token, context)
        try:
            return AESGCM(data_key).decrypt(sealed[:12], sealed[12:], context.encode()).decode()
        except InvalidTag:
            raise SecretError("the sealed secret does not open here") from None

    def rewrap(self, token: str, context: str, new: SecretBox) -> str:
        """The same secret sealed under `new`'s master key (its data key re-wrapped)."""
        data_key, sealed = self._data_key(token, context)
        nonce_key = os.urandom(12)
        wrapped = nonce_key + AESGCM(new.kek).encrypt(nonce_key, data_key, context.encode())
        return ".".join([VERSION, new.kek_id, _b64(wrapped), _b64(sealed)])
