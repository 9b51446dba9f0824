"""The effective settings with their sources (app.settings_report, GET /api/settings): a default, the file, the
environment over the file; secrets masked whichever source gave them, and never anywhere in the answer."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app.devmode import apply_dev_secrets
from app.settings import DEFAULT_FIELD_POLICY, Settings
from app.settings_report import MASK, SettingRow, mask_text, report
from tests.conftest import TEST_REDIS_URL, TEST_TOKENS, bearer

EXAMPLE = Path(__file__).resolve().parent.parent / "sync.example.toml"
DB_PASSWORD = "db-pass/word@with-odd-chars"
ENV_SECRETS = {
    "SYNC_MOODLE__TOKEN": "moodle-token-from-the-environment",
    "SYNC_API__TOKEN": TEST_TOKENS["api"],
    "SYNC_DATABASE_URL": f"postgresql+asyncpg://sync:{DB_PASSWORD}@db.invalid/sync",
}
FILE_READ_TOKEN = "read-token-from-the-file-0123"
FILE_SMTP_PASSWORD = "smtp-password-from-the-file"
FILE = f"""
log_level = "DEBUG"
redis_url = "redis://:redis-password-in-the-file@redis.invalid:6379/0"

[moodle]
url = "http://moodle.test"
max_batch = 50

[coursesales]
username = "SOAP_USER"
password = "soap-password-from-the-file"

[alerts]
smtp_password = "{FILE_SMTP_PASSWORD}"

[api]
read_token = "{FILE_READ_TOKEN}"
"""
SECRETS = [
    *ENV_SECRETS.values(),
    DB_PASSWORD,
    "redis-password-in-the-file",
    "soap-password-from-the-file",
    FILE_SMTP_PASSWORD,
    FILE_READ_TOKEN,
]


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A file and an environment as an operator's: the environment overrides moodle.max_batch."""
    path = tmp_path / "sync.toml"
    path.write_text(FILE)
    monkeypatch.setenv("SYNC_CONFIG", str(path))
    for name, value in {**ENV_SECRETS, "SYNC_MOODLE__MAX_BATCH": "20", "SYNC_MODE": "test"}.items():
        monkeypatch.setenv(name, value)
    return path


def rows_by_key(rows: list[SettingRow]) -> dict[tuple[str, str], SettingRow]:
    return {(r.section, r.key): r for r in rows}


def test_each_value_names_its_source(config: Path) -> None:
    rows = rows_by_key(report(Settings()))
    assert rows["moodle", "timeout_seconds"] == SettingRow("moodle", "timeout_seconds", 30.0, "default", False)
    assert (rows["moodle", "url"].value, rows["moodle", "url"].source) == ("http://moodle.test", "file")
    assert (rows["", "log_level"].value, rows["", "log_level"].source) == ("DEBUG", "file")
    # In the file (50) and the environment (20): the environment wins, and says so.
    assert (rows["moodle", "max_batch"].value, rows["moodle", "max_batch"].source) == (20, "environment")
    assert (rows["", "mode"].value, rows["", "mode"].source) == ("test", "environment")
    assert rows["reconcile", "interval_minutes"].description == "0 switches the periodic reconcile off"


def test_secrets_are_masked_whichever_source_gave_them(config: Path) -> None:
    rows = report(Settings())
    by_key = rows_by_key(rows)
    expected = {
        ("moodle", "token"): (MASK, "environment"),
        ("api", "token"): (MASK, "environment"),
        ("api", "read_token"): (MASK, "file"),
        ("coursesales", "password"): (MASK, "file"),
        ("alerts", "smtp_password"): (MASK, "file"),
        ("webhooks", "moodle_secret"): (None, "default"),
        ("", "secret_key"): (None, "default"),
        ("", "database_url"): ("postgresql+asyncpg://sync:********@db.invalid/sync", "environment"),
        ("", "redis_url"): ("redis://:********@redis.invalid:6379/0", "file"),
    }
    assert {k: (by_key[k].value, by_key[k].source) for k in expected} == expected
    assert all(by_key[k].secret for k in expected if k[1] not in ("database_url", "redis_url"))
    shown = json.dumps([dataclasses.asdict(r) for r in rows]) + repr(rows)
    assert [s for s in SECRETS if s in shown] == []


def test_a_dict_setting_shows_every_entry_in_effect(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    monkeypatch.setenv("SYNC_USERS__FIELDS__PHONE1", "locked")
    config.write_text(FILE + '\n[users.fields]\nemail = "unlocked_if_empty"\n')
    rows = rows_by_key(report(Settings()))
    fields = {k: (r.value, r.source) for (section, k), r in rows.items() if section == "users.fields"}
    assert fields == {
        "firstname": ("locked", "default"),
        "lastname": ("locked", "default"),
        "email": ("unlocked_if_empty", "file"),
        "phone1": ("locked", "environment"),
    }


def test_secrets_from_files_of_the_secrets_directory(config: Path, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SYNC_WEBHOOKS__MOODLE_TOKEN").write_text("moodle-webhook-token-in-a-file")
    settings = Settings(_secrets_dir=secrets)  # type: ignore[call-arg]
    row = rows_by_key(report(settings, secrets_dir=secrets))["webhooks", "moodle_token"]
    assert (row.value, row.source, row.secret) == (MASK, "secrets_dir", True)


def test_what_no_source_gives_now_is_named_startup(config: Path, tmp_path: Path) -> None:
    """Dev mode's generated secrets, and a value of a file changed since the service started: no source to name."""
    settings = apply_dev_secrets(Settings(mode="dev", var_dir=tmp_path / "var"))
    changed = FILE.replace("DEBUG", "WARNING").replace("http://moodle.test", "moodle.invalid")  # now no URL
    config.write_text(changed)
    rows = rows_by_key(report(settings))
    assert (rows["compat", "wstoken"].value, rows["compat", "wstoken"].source) == (MASK, "startup")
    assert (rows["", "log_level"].value, rows["", "log_level"].source) == ("DEBUG", "startup")
    assert (rows["moodle", "url"].value, rows["moodle", "url"].source) == ("http://moodle.test", "startup")
    assert rows["moodle", "max_batch"].source == "environment"
    assert rows["webhooks", "moodle_secret"].source == "default"


def test_an_unreadable_source_is_no_error_and_no_guess(config: Path) -> None:
    """A source changed since start-up into something unreadable: the values are still reported, as set at start-up
    (the file's or the environment's value is not claimed), and the unreadable text is not repeated."""
    settings = Settings()
    config.write_text("[moodle\nurl = 'unterminated")
    broken = {**ENV_SECRETS, "SYNC_COURSES__SCHEDULED_STATUS_IDS": "[1, secret-in-bad-json"}
    rows = report(settings, environ=broken)
    by_key = rows_by_key(rows)
    assert (by_key["moodle", "url"].value, by_key["moodle", "url"].source) == ("http://moodle.test", "startup")
    assert (by_key["moodle", "max_batch"].value, by_key["moodle", "max_batch"].source) == (20, "startup")
    assert "secret-in-bad-json" not in json.dumps([dataclasses.asdict(r) for r in rows])


def test_every_setting_once_in_the_order_of_the_example_file(config: Path) -> None:
    rows = report(Settings())
    headers = re.findall(r"^\[([a-z_.]+)\]", EXAMPLE.read_text(), re.MULTILINE)
    assert list(dict.fromkeys(r.section for r in rows)) == ["", *headers]
    models = [f.annotation for f in Settings.model_fields.values() if isinstance(f.annotation, type)]
    sections = [m for m in models if issubclass(m, BaseModel)]
    leaves = len(Settings.model_fields) - len(sections) + sum(len(m.model_fields) for m in sections)
    # users.fields: a row per entry in effect instead of the one dict setting.
    expected = leaves - 1 + len(DEFAULT_FIELD_POLICY)
    assert len(rows) == len({(r.section, r.key) for r in rows}) == expected


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:********@host/db"),
        (
            "postgresql+asyncpg://u:p/a@ss@h:5432/db?ssl=require",
            "postgresql+asyncpg://u:********@h:5432/db?ssl=require",
        ),
        ("redis://:pw@redis:6379/0", "redis://:********@redis:6379/0"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u&password=********"),
        ("https://moodle.example.org?wstoken=abc", "https://moodle.example.org?wstoken=********"),
        ("sqlite+aiosqlite:///var/sync.db", "sqlite+aiosqlite:///var/sync.db"),
        ("user:pw@host is no URL", "user:pw@host is no URL"),
    ],
)
def test_a_url_is_shown_without_its_password(text: str, shown: str) -> None:
    assert mask_text(text) == shown


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, config: Path, var_dir: Path, migrated: str) -> Settings:
    """The API's runtime on these settings (their database URL is never connected by GET /api/settings)."""
    monkeypatch.setenv("SYNC_SECRET_KEY", TEST_TOKENS["secret_key"])
    return Settings(var_dir=var_dir, redis_url=TEST_REDIS_URL)


async def test_the_answer_names_sources_and_holds_no_secret(client: httpx.AsyncClient, config: Path) -> None:
    r = await client.get("/api/settings", headers=bearer("api"))
    assert r.status_code == 200, r.text
    assert [s for s in SECRETS if s in r.text] == []
    body: dict[str, Any] = r.json()
    assert body["file"] == str(config)
    items = {(i["section"], i["key"]): i for i in body["items"]}
    assert items["moodle", "max_batch"] == {
        "section": "moodle",
        "key": "max_batch",
        "value": 20,
        "source": "environment",
        "secret": False,
        "description": None,
    }
    assert (items["moodle", "url"]["value"], items["moodle", "url"]["source"]) == ("http://moodle.test", "file")
    assert items["jobs", "lease_seconds"]["source"] == "default"
    assert {k: (items[k]["value"], items[k]["source"]) for k in [("api", "token"), ("api", "read_token")]} == {
        ("api", "token"): (MASK, "environment"),
        ("api", "read_token"): (MASK, "file"),
    }
    assert items["", "database_url"]["value"] == "postgresql+asyncpg://sync:********@db.invalid/sync"
    assert (items["", "secret_key"]["value"], items["", "secret_key"]["secret"]) == (MASK, True)
    assert TEST_TOKENS["secret_key"] not in r.text


async def test_the_read_token_reads_and_no_token_is_401(client: httpx.AsyncClient) -> None:
    assert (
        await client.get("/api/settings", headers={"Authorization": f"Bearer {FILE_READ_TOKEN}"})
    ).status_code == 200
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all-0123"}, bearer("coursesales")):
        r = await client.get("/api/settings", headers=headers)
        assert r.status_code == 401 and [s for s in SECRETS if s in r.text] == []
