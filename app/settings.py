"""The configuration: one TOML file (``SYNC_CONFIG``, default ``./sync.toml``) under ``SYNC_*`` variables.

Sections mirror the settings pages of the CourseSales Moodle plugins. Environment variables override the
file: ``SYNC_<SECTION>__<KEY>`` (``SYNC_MOODLE__TOKEN``); top-level ones are ``SYNC_<KEY>``. The sections' models
live in app.settings_sections and the credentials' checks in app.settings_secrets; both are importable from here.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.settings_secrets import credentials, inbound_secrets, is_set, secret, weak_credentials
from app.settings_sections import (
    DEFAULT_FIELD_POLICY,
    AlertsSettings,
    ApiSettings,
    CompatSettings,
    CompletionSettings,
    ConsoleSettings,
    CourseSalesSettings,
    CoursesSettings,
    EnrolmentsSettings,
    FieldPolicy,
    HubSettings,
    JobsSettings,
    MetricsSettings,
    MoodleSettings,
    NewEnrolmentsSettings,
    ReconcileSettings,
    RetentionSettings,
    UsersSettings,
    WebhookSettings,
)

__all__ = [
    "DEFAULT_FIELD_POLICY",
    "ENV_NOT_SETTINGS",
    "ENV_OTHER_PREFIXES",
    "ENV_PREFIX",
    "AlertsSettings",
    "ApiSettings",
    "CompatSettings",
    "CompletionSettings",
    "ConsoleSettings",
    "CourseSalesSettings",
    "CoursesSettings",
    "EnrolmentsSettings",
    "FieldPolicy",
    "HubSettings",
    "JobsSettings",
    "MetricsSettings",
    "Mode",
    "MoodleSettings",
    "NewEnrolmentsSettings",
    "ReconcileSettings",
    "RetentionSettings",
    "Settings",
    "UsersSettings",
    "WebhookSettings",
    "config_path",
    "get_settings",
    "secret",
]

Mode = Literal["production", "dev", "test"]
ENV_PREFIX = "SYNC_"
# Variables read by name that are no setting; the tests and the benchmarks own SYNC_TEST_* and SYNC_BENCH_*.
ENV_NOT_SETTINGS = frozenset({"SYNC_CONFIG", "SYNC_SECRETS_DIR"})
ENV_OTHER_PREFIXES = ("SYNC_TEST_", "SYNC_BENCH_")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        secrets_dir=os.environ.get("SYNC_SECRETS_DIR") or None,
        # A file per variable, section secrets too (SYNC_MOODLE__TOKEN): as Docker and Kubernetes mount secrets.
        secrets_nested_delimiter="__",
    )

    mode: Mode = "production"
    var_dir: Path = Path("./var")
    database_url: str = ""
    redis_url: str = ""
    secret_key: SecretStr | None = None
    # During a rotation of SYNC_SECRET_KEY: the key before, still opening the keyring until `moodle-sync rotate-key`.
    secret_key_previous: SecretStr | None = None
    log_level: str = "INFO"
    log_json: bool = True

    moodle: MoodleSettings = MoodleSettings()
    coursesales: CourseSalesSettings = CourseSalesSettings()
    users: UsersSettings = UsersSettings()
    courses: CoursesSettings = CoursesSettings()
    enrolments: EnrolmentsSettings = EnrolmentsSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    alerts: AlertsSettings = AlertsSettings()
    retention: RetentionSettings = RetentionSettings()
    completion: CompletionSettings = CompletionSettings()
    new_enrolments: NewEnrolmentsSettings = NewEnrolmentsSettings()
    webhooks: WebhookSettings = WebhookSettings()
    compat: CompatSettings = CompatSettings()
    api: ApiSettings = ApiSettings()
    console: ConsoleSettings = ConsoleSettings()
    jobs: JobsSettings = JobsSettings()
    metrics: MetricsSettings = MetricsSettings()
    hub: HubSettings = HubSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            NestedSecretsSettingsSource(file_secret_settings),
            TomlConfigSettingsSource(settings_cls, toml_file=config_path()),
        )

    @property
    def metrics_dir(self) -> Path:
        return self.metrics.dir or self.var_dir / "metrics"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.var_dir / 'sync.db'}"

    def inbound_methods(self) -> dict[str, bool]:
        """Which ways in are switched on (a method is off while its credential is unset)."""
        w = self.webhooks
        return {
            "coursesales.signature": is_set(w.coursesales_secret),
            "coursesales.token": is_set(w.coursesales_token),
            "moodle.signature": is_set(w.moodle_secret),
            "moodle.token": is_set(w.moodle_token),
            "compat.wstoken": is_set(self.compat.wstoken),
        }

    def secret_values(self) -> list[str]:
        """Every secret this service holds, for the logs to mask wherever one appears."""
        held = [*credentials(self).values(), self.coursesales.password, self.alerts.smtp_password]
        return [v.get_secret_value() for v in held if v is not None and v.get_secret_value()]

    def problems(self) -> list[str]:
        """Reasons to refuse to start, one line each naming its variable: required secrets missing or placeholders
        (production), and in every mode credentials too short to hold, undecodable signing secrets, one value
        reused for two credentials and keys of the configuration file that are no setting."""
        out: list[str] = []
        if self.mode == "production":
            for name, value in (("SYNC_SECRET_KEY", self.secret_key), ("SYNC_API__TOKEN", self.api.token)):
                if not is_set(value):
                    out.append(f"{name} is required outside dev mode (it is empty or a placeholder)")
            optional = {
                **inbound_secrets(self),
                "SYNC_API__READ_TOKEN": self.api.read_token,
                "SYNC_HUB__TOKEN": self.hub.token,
            }
            for name, value in optional.items():
                if value is not None and not is_set(value):
                    out.append(f"{name} is set to an empty or placeholder value; unset it to switch that method off")
        from app.config_keys import unknown_config_keys

        return out + weak_credentials(self) + unknown_config_keys()


def config_path() -> Path:
    """The configuration file: ``SYNC_CONFIG``, else ./sync.toml; it is read only if it exists."""
    return Path(os.environ.get("SYNC_CONFIG", "sync.toml")).expanduser()


@lru_cache
def get_settings() -> Settings:
    return Settings()
