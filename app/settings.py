"""The configuration: one TOML file (``SYNC_CONFIG``, default ``./sync.toml``) under ``SYNC_*`` variables.

Sections mirror the settings pages of the CourseSales Moodle plugins. Environment variables override the
file: ``SYNC_<SECTION>__<KEY>`` (``SYNC_MOODLE__TOKEN``); top-level ones are ``SYNC_<KEY>``.
"""

from __future__ import annotations

import base64
import binascii
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Mode = Literal["production", "dev", "test"]
PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "xxx", "todo", "placeholder", "<secret>"})
# Shorter than these, a credential can be guessed or is a typo; each refusal names its variable.
MIN_TOKEN_CHARS = 16
MIN_SECRET_KEY_CHARS = 32
MIN_WHSEC_BYTES = 24
ENV_PREFIX = "SYNC_"
# Variables read by name that are no setting; the tests and the benchmarks own SYNC_TEST_* and SYNC_BENCH_*.
ENV_NOT_SETTINGS = frozenset({"SYNC_CONFIG", "SYNC_SECRETS_DIR"})
ENV_OTHER_PREFIXES = ("SYNC_TEST_", "SYNC_BENCH_")


class FieldPolicy(StrEnum):
    """Who owns a user field after creation (the CourseSales auth plugin's field locks)."""

    locked = "locked"  # CourseSales wins on every update
    unlocked = "unlocked"  # set at creation, then Moodle owns it
    unlocked_if_empty = "unlocked_if_empty"  # written only while Moodle's value is empty


# As in the CourseSales auth plugin: names and email belong to CourseSales, the rest to Moodle.
DEFAULT_FIELD_POLICY: dict[str, FieldPolicy] = {
    "firstname": FieldPolicy.locked,
    "lastname": FieldPolicy.locked,
    "email": FieldPolicy.locked,
    "phone1": FieldPolicy.unlocked,
}


def _http_url(value: str) -> str:
    """An upstream's address: empty (not configured yet) or an http(s) URL; "moodle.example.org" alone would be
    requested as a relative path and fail with a puzzling error at the first call."""
    if value and not value.lower().startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not a URL: start it with https:// (or http://)")
    return value.rstrip("/")


class MoodleSettings(BaseModel):
    url: str = ""
    token: SecretStr = SecretStr("")
    timeout_seconds: float = 30.0
    duplicate_timeout_seconds: float = 600.0
    max_in_flight: int = Field(4, ge=1, le=64)
    max_batch: int = Field(100, ge=1, le=1000)
    # PHP's max_input_vars is 5000 by default; a bigger form is silently cut short.
    max_input_vars: int = Field(4000, ge=50)
    # While Moodle is unusable (maintenance, unreachable, a token problem), one probe every this many seconds.
    probe_seconds: float = Field(5.0, gt=0, le=300)

    @property
    def configured(self) -> bool:
        return bool(self.url and self.token.get_secret_value())

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class CourseSalesSettings(BaseModel):
    url: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout_seconds: float = 30.0
    # While CourseSales is unusable (unreachable, a refused login), one probe every this many seconds.
    probe_seconds: float = Field(5.0, gt=0, le=300)

    @property
    def configured(self) -> bool:
        return bool(self.url and self.username and self.password.get_secret_value())

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class UsersSettings(BaseModel):
    """Moodle's site rules for accounts (they are site settings there, so settings here too)."""

    auth: str = "manual"
    username_chars: str = r"-.@_a-z0-9"
    username_max_length: int = 100
    password_min_length: int = 8
    password_min_digits: int = 1
    password_min_lower: int = 1
    password_min_upper: int = 1
    password_min_nonalphanum: int = 1
    # Overrides of DEFAULT_FIELD_POLICY, field by field (SYNC_USERS__FIELDS__PHONE1=locked).
    fields: dict[str, FieldPolicy] = Field(default_factory=dict)
    # An existing Moodle account the sync did not make is never taken over unless this is on (then guarded below).
    adopt_existing: bool = False
    # With adoption on: also look for the contact's account by email (usernames differ).
    match_by_email: bool = False
    # Only accounts with one of these auth methods are adopted; empty: [auth] (the plugins used "coursesales").
    adopt_auths: list[str] = Field(default_factory=list)
    # Adopted accounts keep their password unless this is on (while the portal password is the truth).
    adopt_overwrites_password: bool = False
    suspend_inactive: bool = True

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, FieldPolicy]) -> dict[str, FieldPolicy]:
        unknown = set(value) - set(DEFAULT_FIELD_POLICY)
        if unknown:
            raise ValueError(f"unknown user field(s) {sorted(unknown)}; known: {', '.join(DEFAULT_FIELD_POLICY)}")
        return value

    def policy(self, field: str) -> FieldPolicy:
        return self.fields.get(field) or DEFAULT_FIELD_POLICY[field]

    @property
    def adoptable_auths(self) -> list[str]:
        return self.adopt_auths or [self.auth]


class CoursesSettings(BaseModel):
    """Course dates -> Moodle courses (the CourseSales enrol/local plugin settings)."""

    auto_create: bool = True
    naming: Literal["category_and_date", "category"] = "category_and_date"
    name_sync: Literal["both", "moodle"] = "both"
    timezone: str = "UTC"
    # The course category form field holding the Moodle category id: by id, else by name.
    category_field_id: int | None = None
    category_field_name: str = "Moodle Category Id"
    template_field_id: int | None = None
    template_field_name: str = "Moodle Course Template"
    inherit_category_mapping: bool = True
    include_activities: bool = True
    include_blocks: bool = True
    include_filters: bool = True
    # CourseSales does not publish its codes; the guide's example shows StatusId 1 and Visibility 2.
    scheduled_status_ids: list[int] = Field(default_factory=lambda: [1])
    public_visibility_ids: list[int] = Field(default_factory=lambda: [2])
    # A course date read from CourseSales is reused for this long before it is read again.
    cache_seconds: int = 300

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Australia/Brisbane)") from None
        return value


class EnrolmentsSettings(BaseModel):
    role_id: int = 5  # student on a stock Moodle
    use_course_dates: bool = True
    unenrol_action: Literal["suspend", "unenrol", "keep"] = "suspend"


class ReconcileSettings(BaseModel):
    interval_minutes: int = Field(60, ge=0, description="0 switches the periodic reconcile off")


class CompletionSettings(BaseModel):
    """Moodle course completion -> a CourseSales process step on the learner's Document (sends the certificate)."""

    process_step_id: int | None = None
    verify: bool = True  # confirm with core_completion_get_course_completion_status before acting
    unmapped_retry_seconds: int = 600  # links may be on their way: retry this long, then fail and alert
    pull_window_days: int = 90  # the reconcile pulls completions of course dates running or ended this recently


class NewEnrolmentsSettings(BaseModel):
    """Enrolments made in Moodle -> registrations posted to a CourseSales form."""

    enabled: bool = False
    form_id: int | None = None
    process_path_id: int | None = None
    process_step_id: int | None = None
    first_name_field_id: int | None = None
    surname_field_id: int | None = None
    username_field_id: int | None = None
    email_field_id: int | None = None
    phone_field_id: int | None = None
    # local_webhooks posts before Moodle commits: wait, then confirm the enrolment exists.
    confirm_delay_seconds: int = 10
    confirm_window_seconds: int = 300


class AlertsSettings(BaseModel):
    """Alert emails for what a person must fix (SMTP); the password comes from SYNC_ALERTS__SMTP_PASSWORD."""

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    sender: str = ""
    recipients: list[str] = Field(default_factory=list)
    # One email per cause per window, however many events share the cause.
    window_minutes: int = Field(60, ge=1)
    # No Moodle event for this long while enrolments are active is itself worth an email (0 = off).
    silence_hours: int = Field(24, ge=0)
    # An upstream unusable for longer than this is worth a second email (work is waiting for it).
    waiting_minutes: int = Field(30, ge=1)
    # An optional debug log file, as the plugins had.
    debug_log_file: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.smtp_host and self.sender and self.recipients)


class RetentionSettings(BaseModel):
    days: int = Field(90, ge=1, description="event payloads of finished events are purged after this many days")


class WebhookSettings(BaseModel):
    """Inbound credentials, one set per source: reading one source's cannot forge the other's events."""

    coursesales_secret: SecretStr | None = None
    coursesales_token: SecretStr | None = None
    moodle_secret: SecretStr | None = None
    moodle_token: SecretStr | None = None
    # How far a signed delivery's webhook-timestamp may be from now, either way (replays outside it are refused).
    tolerance_seconds: int = Field(300, ge=1, le=86_400)


class CompatSettings(BaseModel):
    """The Moodle-compatible endpoint that CourseSales "Moodle" export maps call."""

    wstoken: SecretStr | None = None


class ApiSettings(BaseModel):
    token: SecretStr | None = None
    max_body_bytes: int = 1024 * 1024
    # /docs, /redoc and /openapi.json: `off` (404) in a production install that publishes its spec elsewhere.
    docs: Literal["public", "off"] = "public"
    # What one connection may hold before it is authenticated (the server the CLI starts enforces these).
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="a request's request line and headers, in bytes")
    max_connections: int = Field(1000, ge=1, description="connections served at once; more are answered 503")
    header_timeout_seconds: float = Field(10.0, gt=0, description="a request's headers must arrive within this")
    body_timeout_seconds: float = Field(30.0, gt=0, description="a request's body must arrive within this")


class MetricsSettings(BaseModel):
    """Prometheus: every process of one host writes its series to ``dir``, and the API's /metrics shows them all."""

    dir: Path | None = Field(None, description="default: <var_dir>/metrics; one per host, never shared between hosts")
    # A worker on another host than the API serves its host's series on this port (0: off).
    worker_port: int = Field(0, ge=0, le=65535)
    # `token`: /metrics asks for the ops bearer token (Prometheus: authorization.credentials).
    access: Literal["public", "token"] = "public"


class JobsSettings(BaseModel):
    retry_horizon_hours: float = 24.0
    sweep_interval_seconds: int = 60
    lease_seconds: int = 300
    # How often an idle worker looks for new jobs: the floor of the latency from an event to its work.
    poll_delay_seconds: float = Field(0.05, gt=0, le=10)


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
    jobs: JobsSettings = JobsSettings()
    metrics: MetricsSettings = MetricsSettings()

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
            "coursesales.signature": _set(w.coursesales_secret),
            "coursesales.token": _set(w.coursesales_token),
            "moodle.signature": _set(w.moodle_secret),
            "moodle.token": _set(w.moodle_token),
            "compat.wstoken": _set(self.compat.wstoken),
        }

    def secret_values(self) -> list[str]:
        """Every secret this service holds, for the logs to mask wherever one appears."""
        held = [*_credentials(self).values(), self.coursesales.password, self.alerts.smtp_password]
        return [v.get_secret_value() for v in held if v is not None and v.get_secret_value()]

    def problems(self) -> list[str]:
        """Reasons to refuse to start, one line each naming its variable: required secrets missing or placeholders
        (production), and in every mode credentials too short to hold, undecodable signing secrets, one value
        reused for two credentials and keys of the configuration file that are no setting."""
        out: list[str] = []
        if self.mode == "production":
            for name, value in (("SYNC_SECRET_KEY", self.secret_key), ("SYNC_API__TOKEN", self.api.token)):
                if not _set(value):
                    out.append(f"{name} is required outside dev mode (it is empty or a placeholder)")
            for name, value in _inbound_secrets(self).items():
                if value is not None and not _set(value):
                    out.append(f"{name} is set to an empty or placeholder value; unset it to switch that method off")
        from app.config_keys import unknown_config_keys

        return out + _weak_credentials(self) + unknown_config_keys()


def config_path() -> Path:
    """The configuration file: ``SYNC_CONFIG``, else ./sync.toml; it is read only if it exists."""
    return Path(os.environ.get("SYNC_CONFIG", "sync.toml")).expanduser()


def _set(value: SecretStr | None) -> TypeGuard[SecretStr]:
    return value is not None and value.get_secret_value().strip().lower() not in PLACEHOLDERS


def _inbound_secrets(s: Settings) -> dict[str, SecretStr | None]:
    return {
        "SYNC_WEBHOOKS__COURSESALES_SECRET": s.webhooks.coursesales_secret,
        "SYNC_WEBHOOKS__COURSESALES_TOKEN": s.webhooks.coursesales_token,
        "SYNC_WEBHOOKS__MOODLE_SECRET": s.webhooks.moodle_secret,
        "SYNC_WEBHOOKS__MOODLE_TOKEN": s.webhooks.moodle_token,
        "SYNC_COMPAT__WSTOKEN": s.compat.wstoken,
    }


def _weak_credentials(s: Settings) -> list[str]:
    out: list[str] = []
    given = {name: v.get_secret_value() for name, v in _credentials(s).items() if _set(v)}
    for name, value in given.items():
        if name.endswith("_SECRET"):
            problem = _whsec_problem(value)
            if problem:
                out.append(f"{name} {problem}")
        elif name == "SYNC_SECRET_KEY":
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


def _whsec_problem(value: str) -> str | None:
    """Why a Standard Webhooks secret (``whsec_`` + base64) cannot sign, or None."""
    raw = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "is not a Standard Webhooks secret: whsec_ followed by base64"
    if len(key) < MIN_WHSEC_BYTES:
        return f"decodes to {len(key)} bytes; a signing secret needs at least {MIN_WHSEC_BYTES}"
    return None


def _credentials(s: Settings) -> dict[str, SecretStr | None]:
    """Every credential the service holds, by the variable that sets it."""
    return {
        "SYNC_SECRET_KEY": s.secret_key,
        "SYNC_API__TOKEN": s.api.token,
        **_inbound_secrets(s),
        "SYNC_MOODLE__TOKEN": s.moodle.token,
    }


def secret(value: SecretStr | None) -> str | None:
    """The secret's text when it is really set, else None."""
    return value.get_secret_value() if _set(value) else None


@lru_cache
def get_settings() -> Settings:
    return Settings()


def load(**overrides: Any) -> Settings:
    """Settings with explicit overrides (tests, the CLI)."""
    return Settings(**overrides)
