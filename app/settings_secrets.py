"""The credentials' own checks: placeholders, lengths, undecodable signing secrets, one value reused for two.

Each refusal names the variable that sets the credential, never its value.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, TypeGuard

from pydantic import SecretStr

if TYPE_CHECKING:
    from app.settings import Settings

PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "xxx", "todo", "placeholder", "<secret>"})
# Shorter than these, a credential can be guessed or is a typo; each refusal names its variable.
MIN_TOKEN_CHARS = 16
MIN_SECRET_KEY_CHARS = 32
MIN_WHSEC_BYTES = 24


def is_set(value: SecretStr | None) -> TypeGuard[SecretStr]:
    """Whether a credential is really given: not unset, empty or a placeholder (a word of PLACEHOLDERS, or a name in
    angle brackets copied from the docs as it stands, such as `<SYNC_WEBHOOKS__MOODLE_TOKEN>`)."""
    if value is None:
        return False
    text = value.get_secret_value().strip().lower()
    return text not in PLACEHOLDERS and not (text.startswith("<") and text.endswith(">"))


def secret(value: SecretStr | None) -> str | None:
    """The secret's text when it is really set, else None."""
    return value.get_secret_value() if is_set(value) else None


def inbound_secrets(s: Settings) -> dict[str, SecretStr | None]:
    """The credentials of the ways in, by the variable that sets each: unset switches that way off."""
    return {
        "SYNC_WEBHOOKS__COURSESALES_SECRET": s.webhooks.coursesales_secret,
        "SYNC_WEBHOOKS__COURSESALES_TOKEN": s.webhooks.coursesales_token,
        "SYNC_WEBHOOKS__MOODLE_SECRET": s.webhooks.moodle_secret,
        "SYNC_WEBHOOKS__MOODLE_TOKEN": s.webhooks.moodle_token,
        "SYNC_COMPAT__WSTOKEN": s.compat.wstoken,
    }


def credentials(s: Settings) -> dict[str, SecretStr | None]:
    """Every credential the service holds, by the variable that sets it."""
    return {
        "SYNC_SECRET_KEY": s.secret_key,
        "SYNC_SECRET_KEY_PREVIOUS": s.secret_key_previous,
        "SYNC_API__TOKEN": s.api.token,
        "SYNC_API__READ_TOKEN": s.api.read_token,
        "SYNC_HUB__TOKEN": s.hub.token,
        **inbound_secrets(s),
        "SYNC_MOODLE__TOKEN": s.moodle.token,
    }


def weak_credentials(s: Settings) -> list[str]:
    """One line per given credential too short or undecodable to hold, and per value given for two of them."""
    out: list[str] = []
    given = {name: v.get_secret_value() for name, v in credentials(s).items() if is_set(v)}
    for name, value in given.items():
        if name.endswith("_SECRET"):
            problem = whsec_problem(value)
            if problem:
                out.append(f"{name} {problem}")
        elif name.startswith("SYNC_SECRET_KEY"):
            if len(value) < MIN_SECRET_KEY_CHARS:
                out.append(f"{name} is shorter than {MIN_SECRET_KEY_CHARS} characters")
        elif name != "SYNC_MOODLE__TOKEN" and len(value) < MIN_TOKEN_CHARS:
            out.append(f"{name} is shorter than {MIN_TOKEN_CHARS} characters")
    seen: dict[str, str] = {}
    for name, value in given.items():
        if value in seen:
            out.append(f"{name} holds the same value as {seen[value]}: give each credential its own")
        else:
            seen[value] = name
    return out


def whsec_problem(value: str) -> str | None:
    """Why a Standard Webhooks secret (``whsec_`` + base64) cannot sign, or None."""
    raw = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "is not a Standard Webhooks secret: whsec_ followed by base64"
    if len(key) < MIN_WHSEC_BYTES:
        return f"decodes to {len(key)} bytes; a signing secret needs at least {MIN_WHSEC_BYTES}"
    return None
