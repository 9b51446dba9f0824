"""Encryption at rest and keyed digests, both derived from SYNC_SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())


class Vault:
    """Encrypts passwords for the time they wait in the inbox; digests payloads for dedupe keys."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("SYNC_SECRET_KEY is empty")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"csms/fernet/v1")))
        self._mac_key = _derive(secret_key, b"csms/hmac/v1")
        self._root = _derive(secret_key, b"csms/root/v1")  # kept instead of the secret key itself

    def key_for(self, purpose: str) -> bytes:
        """A key of its own for one purpose (the console's session cookies, say), derived from SYNC_SECRET_KEY."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(self._root)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("cannot decrypt: SYNC_SECRET_KEY changed since this was stored") from None

    def digest(self, value: Any) -> str:
        """HMAC-SHA256 of a canonical JSON form: equal content, equal digest; secrets never recoverable."""
        data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()
