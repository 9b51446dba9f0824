"""The sections of the configuration, one model each: ``[moodle]`` in the file, ``SYNC_MOODLE__*`` in the environment.

They mirror the settings pages of the CourseSales Moodle plugins; app.settings gathers them into Settings.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, SecretStr, field_validator


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


UpstreamUrl = Annotated[str, AfterValidator(_http_url)]


class MoodleSettings(BaseModel):
    url: UpstreamUrl = ""
    token: SecretStr = SecretStr("")
    timeout_seconds: float = 30.0
    duplicate_timeout_seconds: float = 600.0
    max_in_flight: int = Field(4, ge=1, le=64)
    max_batch: int = Field(100, ge=1, le=1000)
    # PHP's max_input_vars is 5000 by default; a bigger form is silently cut short.
    max_input_vars: int = Field(4000, ge=50)
    # While Moodle is unusable (maintenance, unreachable, a token problem), one probe every this many seconds.
    probe_seconds: float = Field(5.0, gt=0, le=300)
    # The round-trip check's own user and courses are named with this, so that nobody mistakes them for real ones;
    # lower case (a Moodle username), never a number (course idnumbers are CourseSales course date ids).
    scratch_prefix: str = Field("zz-moodle-sync-check", pattern=r"^[a-z][-_.a-z0-9]{2,39}$")

    @property
    def configured(self) -> bool:
        return bool(self.url and self.token.get_secret_value())


class CourseSalesSettings(BaseModel):
    url: UpstreamUrl = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout_seconds: float = 30.0
    # While CourseSales is unusable (unreachable, a refused login), one probe every this many seconds.
    probe_seconds: float = Field(5.0, gt=0, le=300)
    # Calls to this CourseSales account in flight at once, per process (each tenant has its own).
    max_in_flight: int = Field(4, ge=1, le=64)

    @property
    def configured(self) -> bool:
        return bool(self.url and self.username and self.password.get_secret_value())


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
    # Moodle's allowaccountssameemail. Off (Moodle's default), Moodle refuses an account whose username or email
    # another has, so the sync creates a new contact's user first and looks it up only when Moodle refuses the
    # batch; on, it reads Moodle by username and email before each create (two more calls a batch).
    allow_same_email: bool = False

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
    # A second bearer token for scripts that only look: every GET of /api/, nothing that changes state.
    read_token: SecretStr | None = None
    max_body_bytes: int = 1024 * 1024
    # /docs, /redoc and /openapi.json: `off` (404) in a production install that publishes its spec elsewhere.
    docs: Literal["public", "off"] = "public"
    # What one connection may hold before it is authenticated (the server the CLI starts enforces these).
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="a request's request line and headers, in bytes")
    max_connections: int = Field(1000, ge=1, description="connections served at once; more are answered 503")
    header_timeout_seconds: float = Field(10.0, gt=0, description="a request's headers must arrive within this")
    body_timeout_seconds: float = Field(30.0, gt=0, description="a request's body must arrive within this")
    # The proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (uvicorn's forwarded_allow_ips): the
    # console's cookie is Secure when such a proxy says the request came over https, and its sign-in limit counts
    # the address the proxy names. "*" trusts every peer: only when nothing but the proxy can reach the service.
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"], description="addresses or networks of the reverse proxies in front"
    )


class ConsoleSettings(BaseModel):
    """The operators' web console at /console."""

    session_hours: int = Field(12, ge=1, le=720, description="a signed-in operator's session ends after this")


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


class HubSettings(BaseModel):
    """The hub: one deployment serving many tenants, managed with SYNC_HUB__TOKEN through /api/tenants."""

    token: SecretStr | None = None
    # The address the tenants' senders reach this service at: their inbound URLs are built from it.
    public_url: UpstreamUrl = Field("", description='e.g. "https://sync.example.org"; "": URLs shown as paths')
    # Fair intake: a registered tenant's deliveries accepted per second by the whole deployment (app.intake_limit);
    # past it, 429 with Retry-After (nothing answered 2xx is lost). The tenant default (the file's own) has no limit.
    intake_per_second: int = Field(
        100, ge=0, description="per registered tenant, across every API process (kept in Redis); 0: no limit"
    )
