"""Encryption at rest and keyed digests, under data keys that SYNC_SECRET_KEY wraps (the keyring).

Two data keys do the work: a Fernet key encrypts what must be read back (a contact's password while it waits, a
tenant's credentials), an HMAC key makes the one-way digests (dedupe keys of the Moodle-compatible endpoint, a
delivery's body hash, the password and field digests of a link, token look-ups). They are stored once in the
database, wrapped (Fernet) under a key derived from SYNC_SECRET_KEY (app.sync.keyring): rotating SYNC_SECRET_KEY
re-wraps them, so no digest changes and every repeat is still recognised; `moodle-sync rotate-key` also moves what
was encrypted to a fresh Fernet key. An install from before the keyring used keys derived from SYNC_SECRET_KEY
itself: those derived keys are its data keys, wrapped on its first start (``DataKeys.derived``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, replace
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())


def _fernet(key: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(key))


@dataclass(frozen=True, repr=False)
class DataKeys:
    """The keys the data is encrypted and digested with (never logged: no repr)."""

    fernet: bytes
    mac: bytes
    root: bytes  # what per-purpose keys derive from (the console's session cookies, say)

    @classmethod
    def derived(cls, secret_key: str) -> DataKeys:
        """The keys an install without a keyring has always used: derived from SYNC_SECRET_KEY itself."""
        if not secret_key:
            raise ValueError("SYNC_SECRET_KEY is empty")
        return cls(
            fernet=_derive(secret_key, b"csms/fernet/v1"),
            mac=_derive(secret_key, b"csms/hmac/v1"),
            root=_derive(secret_key, b"csms/root/v1"),
        )

    def with_fresh_fernet(self) -> DataKeys:
        """The same digests, a new encryption key (what rotate-key moves the encrypted values to)."""
        return replace(self, fernet=os.urandom(32))

    def wrap(self, secret_key: str) -> str:
        """These keys, encrypted under SYNC_SECRET_KEY, as the keyring stores them."""
        plain = {k: base64.b64encode(getattr(self, k)).decode() for k in ("fernet", "mac", "root")}
        return _fernet(_derive(secret_key, b"csms/keyring/v1")).encrypt(json.dumps(plain).encode()).decode()

    @classmethod
    def unwrap(cls, wrapped: str, secret_key: str) -> DataKeys:
        """The keys from the keyring; ValueError when ``secret_key`` is not the one they were wrapped with."""
        try:
            plain = json.loads(_fernet(_derive(secret_key, b"csms/keyring/v1")).decrypt(wrapped.encode()))
        except InvalidToken:
            raise ValueError("this key did not wrap the keyring") from None
        return cls(**{k: base64.b64decode(plain[k]) for k in ("fernet", "mac", "root")})


class VaultLocked(RuntimeError):
    """The keyring is not open yet (the database has not answered since the process started): nothing can be
    encrypted or digested until it is, rather than under the wrong key."""


class Vault:
    """Encrypts secrets for the time they are kept; digests values for dedupe keys and look-ups."""

    def __init__(self, secret_key: str, *, keys: DataKeys | None = None) -> None:
        self.keys = keys or DataKeys.derived(secret_key)
        self._fernet = _fernet(self.keys.fernet)
        self._mac_key = self.keys.mac

    def key_for(self, purpose: str) -> bytes:
        """A key of its own for one purpose (the console's session cookies, say), derived from the data keys."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(self.keys.root)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("cannot decrypt: not encrypted with this service's data key") from None

    def digest(self, value: Any) -> str:
        """HMAC-SHA256 of a canonical JSON form: equal content, equal digest; secrets never recoverable."""
        data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()


class LockedVault(Vault):
    """A process's vault until its keyring opens: every use refuses (the caller answers 503, like a database down)."""

    def __init__(self) -> None:
        self.keys = DataKeys(fernet=b"", mac=b"", root=b"")

    def key_for(self, purpose: str) -> bytes:
        raise _locked()

    def encrypt(self, plaintext: str) -> str:
        raise _locked()

    def decrypt(self, token: str) -> str:
        raise _locked()

    def digest(self, value: Any) -> str:
        raise _locked()


def _locked() -> VaultLocked:
    return VaultLocked("the service's keys are not open yet: its database has not answered since it started")
