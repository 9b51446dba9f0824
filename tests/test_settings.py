"""Configuration: TOML file under environment variables, secrets refused when missing or placeholders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.devmode import apply_dev_secrets
from app.settings import FieldPolicy, Settings


@pytest.fixture(autouse=True)
def _no_ambient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("SYNC_DATABASE_URL", "SYNC_REDIS_URL", "SYNC_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SYNC_CONFIG", str(tmp_path / "missing.toml"))


def test_toml_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "sync.toml"
    cfg.write_text('[moodle]\nurl = "https://lms.example.org"\nmax_batch = 50\n[users.fields]\nphone1 = "locked"\n')
    monkeypatch.setenv("SYNC_CONFIG", str(cfg))
    monkeypatch.setenv("SYNC_MOODLE__MAX_BATCH", "20")
    s = Settings()
    assert s.moodle.url == "https://lms.example.org"
    assert s.moodle.max_batch == 20
    assert s.users.policy("phone1") is FieldPolicy.locked
    assert s.users.policy("email") is FieldPolicy.locked


def test_env_field_policy_override_keeps_other_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_USERS__FIELDS__FIRSTNAME", "unlocked")
    s = Settings()
    assert s.users.policy("firstname") is FieldPolicy.unlocked
    assert s.users.policy("lastname") is FieldPolicy.locked
    assert s.users.policy("phone1") is FieldPolicy.unlocked


def test_production_refuses_missing_and_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_SECRET_KEY", "changeme")
    problems = Settings().problems()
    assert any("SYNC_SECRET_KEY" in p for p in problems)
    assert any("SYNC_API__TOKEN" in p for p in problems)
    monkeypatch.setenv("SYNC_SECRET_KEY", "a-real-long-key-value-of-32-chars")
    monkeypatch.setenv("SYNC_API__TOKEN", "a-real-token-16ch")
    assert Settings().problems() == []
    monkeypatch.setenv("SYNC_WEBHOOKS__MOODLE_TOKEN", "")
    assert any("SYNC_WEBHOOKS__MOODLE_TOKEN" in p for p in Settings().problems())


def test_a_setting_name_copied_from_the_docs_is_a_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_SECRET_KEY", "a-real-long-key-value-of-32-chars")
    monkeypatch.setenv("SYNC_API__TOKEN", "<SYNC_API__TOKEN>")
    monkeypatch.setenv("SYNC_WEBHOOKS__MOODLE_TOKEN", "<SYNC_WEBHOOKS__MOODLE_TOKEN>")
    problems = Settings().problems()
    assert any("SYNC_API__TOKEN" in p for p in problems)
    assert not Settings().inbound_methods()["moodle.token"]  # that way in stays off


def test_inbound_methods_off_until_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not any(Settings().inbound_methods().values())
    monkeypatch.setenv("SYNC_WEBHOOKS__COURSESALES_TOKEN", "tok-123")
    methods = Settings().inbound_methods()
    assert methods["coursesales.token"] and not methods["moodle.token"]


def test_dev_mode_generates_secrets_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = apply_dev_secrets(Settings(mode="dev", var_dir=tmp_path))
    shown = capsys.readouterr().err
    assert s.secret_key is not None and s.api.token is not None
    assert s.api.token.get_secret_value() in shown
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0
    again = apply_dev_secrets(Settings(mode="dev", var_dir=tmp_path))
    assert capsys.readouterr().err == ""
    assert again.api.token.get_secret_value() == s.api.token.get_secret_value()
    assert again.problems() == []


GOOD = {
    "SYNC_MODE": "production",
    "SYNC_SECRET_KEY": "k" * 32,
    "SYNC_API__TOKEN": "api-token-0123456",
    "SYNC_WEBHOOKS__COURSESALES_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "SYNC_WEBHOOKS__COURSESALES_TOKEN": "cs-token-01234567",
    "SYNC_WEBHOOKS__MOODLE_TOKEN": "moodle-token-0123",
    "SYNC_COMPAT__WSTOKEN": "compat-token-0123",
}


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("SYNC_WEBHOOKS__COURSESALES_SECRET", "whsec_", "decodes to 0 bytes"),
        ("SYNC_WEBHOOKS__MOODLE_SECRET", "whsec_c2hvcnQ=", "decodes to 5 bytes"),
        ("SYNC_WEBHOOKS__MOODLE_SECRET", "whsec_not base64!", "not a Standard Webhooks secret"),
        ("SYNC_API__TOKEN", "short-token", "shorter than 16"),
        ("SYNC_WEBHOOKS__COURSESALES_TOKEN", "x" * 15, "shorter than 16"),
        ("SYNC_COMPAT__WSTOKEN", "abc", "shorter than 16"),
        ("SYNC_SECRET_KEY", "k" * 31, "shorter than 32"),
        ("SYNC_WEBHOOKS__MOODLE_TOKEN", "cs-token-01234567", "same value as SYNC_WEBHOOKS__COURSESALES_TOKEN"),
        ("SYNC_MOODLE__TOKEN", "api-token-0123456", "same value as SYNC_API__TOKEN"),
    ],
)
def test_unusable_credentials_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    for name, good in GOOD.items():
        monkeypatch.setenv(name, good)
    assert Settings().problems() == []
    monkeypatch.setenv(variable, value)
    problems = Settings().problems()
    assert len(problems) == 1 and problems[0].startswith(variable) and reason in problems[0], problems
    assert value not in problems[0] or len(value) < 4, "a refusal never repeats the secret"


def test_start_up_refuses_an_unusable_secret_with_one_line(tmp_path: Path) -> None:
    """`moodle-sync serve` exits 2 with one line naming the variable (it started, and every signed delivery was a 500)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(GOOD, SYNC_WEBHOOKS__COURSESALES_SECRET="whsec_", SYNC_VAR_DIR=str(tmp_path),
               SYNC_CONFIG=str(tmp_path / "none.toml"))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "SYNC_" in line]
    assert len(lines) == 1 and "SYNC_WEBHOOKS__COURSESALES_SECRET" in lines[0], done.stderr


def test_an_upstream_url_without_a_scheme_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("SYNC_MOODLE__URL", "moodle.example.org")
    with pytest.raises(ValidationError, match="start it with https://"):
        Settings()
    monkeypatch.setenv("SYNC_MOODLE__URL", "https://moodle.example.org/")
    assert Settings().moodle.url == "https://moodle.example.org"
    monkeypatch.setenv("SYNC_COURSESALES__URL", "school.coursesales.com")
    with pytest.raises(ValidationError, match="coursesales"):
        Settings()


def test_secrets_from_files_named_like_their_variables(tmp_path: Path) -> None:
    """SYNC_SECRETS_DIR holds one file per variable, section secrets too (as Docker and Kubernetes mount them)."""
    (tmp_path / "SYNC_MOODLE__TOKEN").write_text("moodle-token-from-a-file")
    (tmp_path / "SYNC_SECRET_KEY").write_text("k" * 40)
    (tmp_path / "SYNC_WEBHOOKS__COURSESALES_TOKEN").write_text("cs-token-from-a-file")
    s = Settings(mode="test", _secrets_dir=tmp_path)  # type: ignore[call-arg]
    assert s.moodle.token.get_secret_value() == "moodle-token-from-a-file"
    assert s.secret_key is not None and s.secret_key.get_secret_value() == "k" * 40
    assert s.webhooks.coursesales_token is not None
    assert s.webhooks.coursesales_token.get_secret_value() == "cs-token-from-a-file"
