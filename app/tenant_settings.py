"""A tenant's Settings: the hub's process-wide settings with the tenant's own sections and secrets over them.

Which sections a tenant sets (TENANT_SECTIONS), and which are the hub's alone:

- a tenant's: moodle, coursesales, users, courses, enrolments, reconcile, alerts, completion, new_enrolments,
  webhooks and compat (each one's Moodle, CourseSales, rules, alert recipients and ways in), and the api's two
  bearer tokens (secrets API__TOKEN and API__READ_TOKEN);
- the hub's: the top-level settings (mode, var_dir, database_url, redis_url, secret_key, log_level, log_json) and
  the sections api (body and connection limits, docs, trusted proxies), console, jobs, metrics, retention and hub.
  One process, one database, one queue, one purge serve every tenant; a tenant cannot move them.

A tenant's sections start from each setting's default, never from the file's: the file's values are the tenant
``default``'s, and inheriting them would send one tenant's learners to another's Moodle or let another's token in.
Nor does the environment reach them (SYNC_MOODLE__TOKEN is the default tenant's): only what the registry holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.crypto import Vault
from app.settings import Settings

if TYPE_CHECKING:
    from app.db.tenants import Tenant

TENANT_SECTIONS = (
    *("moodle", "coursesales", "users", "courses", "enrolments", "reconcile"),
    *("alerts", "completion", "new_enrolments", "webhooks", "compat"),
)
HUB_FIELDS = tuple(name for name in Settings.model_fields if name not in TENANT_SECTIONS)
# A tenant's secrets, named as the environment names them without SYNC_: where each goes in its Settings.
SECRET_NAMES: dict[str, tuple[str, str]] = {
    name: (name.split("__")[0].lower(), name.split("__")[1].lower())
    for name in (
        *("MOODLE__TOKEN", "COURSESALES__PASSWORD", "ALERTS__SMTP_PASSWORD"),
        *("WEBHOOKS__COURSESALES_TOKEN", "WEBHOOKS__COURSESALES_SECRET"),
        *("WEBHOOKS__MOODLE_TOKEN", "WEBHOOKS__MOODLE_SECRET"),
        *("COMPAT__WSTOKEN", "API__TOKEN", "API__READ_TOKEN"),
    )
}
# The credentials that name a tenant (they authenticate a caller here, or act as the tenant in its Moodle): one
# value never serves two tenants. A CourseSales or SMTP password is a login's, which two accounts may share.
REGISTERED = frozenset(SECRET_NAMES) - {"COURSESALES__PASSWORD", "ALERTS__SMTP_PASSWORD"}


class _RegistryOnly(Settings):
    """Settings from the values given alone: no environment, no secrets directory, no file."""

    model_config = SettingsConfigDict(
        **{**Settings.model_config, "secrets_dir": None, "secrets_nested_delimiter": None}
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def build_settings(base: Settings, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Settings:
    """The Settings of a tenant with this config (sections as sync.toml spells them) and these plaintext secrets;
    raises pydantic's ValidationError, each error located as in the file (("moodle", "url"))."""
    values: dict[str, Any] = {name: getattr(base, name) for name in HUB_FIELDS}
    sections: dict[str, dict[str, Any]] = {name: deepcopy(dict(config.get(name) or {})) for name in TENANT_SECTIONS}
    api = base.api.model_dump()
    api["token"] = api["read_token"] = None  # the file's are the default tenant's
    for name, value in secrets.items():
        section, key = SECRET_NAMES[name]
        (api if section == "api" else sections[section])[key] = SecretStr(value)
    return _RegistryOnly(**{**values, **sections, "api": api})


def tenant_settings(base: Settings, tenant: Tenant, *, vault: Vault) -> Settings:
    """A registered tenant's Settings: ``base``'s process-wide settings, its own sections and secrets over them;
    ``vault`` is the runtime's (the keyring's data keys)."""
    return build_settings(base, tenant.config, {name: vault.decrypt(v) for name, v in tenant.secrets.items()})
