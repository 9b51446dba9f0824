"""Dev mode: with no configuration at all, generate the secrets under ./var/ and show them once."""

from __future__ import annotations

import json
import os
import secrets
import sys

from pydantic import SecretStr

from app.settings import Settings

SECRETS_FILE = "dev-secrets.json"


def apply_dev_secrets(settings: Settings) -> Settings:
    """Fill unset secrets from ./var/dev-secrets.json, creating it (mode 0600) on the first start."""
    if settings.mode != "dev":
        return settings
    path = settings.var_dir / SECRETS_FILE
    if path.exists():
        values = json.loads(path.read_text())
    else:
        values = {
            "secret_key": secrets.token_urlsafe(32),
            "api_token": secrets.token_urlsafe(24),
            "coursesales_token": secrets.token_urlsafe(24),
            "moodle_token": secrets.token_urlsafe(24),
            "compat_wstoken": secrets.token_hex(16),
        }
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh, indent=2)
        _show(values, path)
    update: dict = {}
    if settings.secret_key is None:
        update["secret_key"] = SecretStr(values["secret_key"])
    if settings.api.token is None:
        update["api"] = settings.api.model_copy(update={"token": SecretStr(values["api_token"])})
    hooks = {}
    if settings.webhooks.coursesales_token is None:
        hooks["coursesales_token"] = SecretStr(values["coursesales_token"])
    if settings.webhooks.moodle_token is None:
        hooks["moodle_token"] = SecretStr(values["moodle_token"])
    if hooks:
        update["webhooks"] = settings.webhooks.model_copy(update=hooks)
    if settings.compat.wstoken is None:
        update["compat"] = settings.compat.model_copy(update={"wstoken": SecretStr(values["compat_wstoken"])})
    return settings.model_copy(update=update)


def _show(values: dict[str, str], path: object) -> None:
    """Printed once, at the first start: the operator copies them into CourseSales and Moodle."""
    print(
        "\n  Dev mode: secrets generated and stored in "
        f"{path} (shown this once)\n"
        f"    ops API token (Authorization: Bearer):    {values['api_token']}\n"
        f"    CourseSales webhook token (Bearer):       {values['coursesales_token']}\n"
        f"    Moodle webhook token (Bearer or 'token'): {values['moodle_token']}\n"
        f"    export map wstoken (Moodle-compatible):   {values['compat_wstoken']}\n",
        file=sys.stderr,
    )
