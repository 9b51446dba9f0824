"""No secret in any log line of a real `moodle-sync serve`: tokens and a student's password sent in query strings,
headers and bodies never appear in its output, plain or URL-encoded, at DEBUG (uvicorn's access and error logs,
arq and the database driver included: every line goes through the same redaction)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx

from app import logs
from tests.conftest import TEST_REDIS_URL, TEST_TOKENS
from tests.procs import free_port, moodle_sync_command, worker_env

PASSWORD = "Unm1stakable!Secret#1"
COMPAT = "/webservice/rest/server.php"


def _forms(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote_plus(value), quote(value)}


def _user_query(username: str) -> dict[str, str]:
    return {
        "wstoken": TEST_TOKENS["compat"],
        "wsfunction": "core_user_create_users",
        "moodlewsrestformat": "json",
        "users[0][username]": username,
        "users[0][password]": PASSWORD,
        "users[0][firstname]": "Log",
        "users[0][lastname]": "Test",
        "users[0][email]": username,
    }


def _exercise(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        # A Moodle client's GET: every field in the query string, brackets URL-encoded by httpx.
        assert http.get(COMPAT, params=_user_query("log1@example.com")).status_code == 200
        # The same with the brackets written plainly, as PHP clients often send them.
        plain = "&".join(f"{k}={quote(v, safe='')}" for k, v in _user_query("log2@example.com").items())
        assert http.get(f"{COMPAT}?{plain.replace('%5B', '[').replace('%5D', ']')}").status_code == 200
        # A wrong token, then the right one, in the query string of the Moodle webhook and the ops API.
        event = {"eventname": "\\core\\event\\course_viewed", "timecreated": 1795608984}
        hook = http.post(f"/webhooks/moodle?token={TEST_TOKENS['moodle']}", json=event)
        assert hook.status_code == 401  # a token in the query string is not a way in: refused, and not logged
        ops = {"Authorization": f"Bearer {TEST_TOKENS['api']}"}
        assert http.get(f"/api/events?token={TEST_TOKENS['api']}&limit=5", headers=ops).status_code == 200
        body = {
            "type": "contact.upserted",
            "id": "log-secrets-1",
            "contact": {"contact_id": 77, "username": "log3@example.com", "firstname": "L", "lastname": "T",
                        "email": "log3@example.com", "password": PASSWORD},
        }  # fmt: skip
        cs = {"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
        assert http.post("/webhooks/coursesales", json=body, headers=cs).status_code == 202
        assert http.post(COMPAT, data=_user_query("log4@example.com")).status_code == 200


def test_no_secret_in_any_log_line(migrated: str, tmp_path: Path) -> None:
    env = worker_env(
        database_url=migrated,
        redis_url=TEST_REDIS_URL,
        moodle_url="",
        var_dir=tmp_path / "var",
        SYNC_MOODLE__TOKEN="",
        SYNC_LOG_LEVEL="DEBUG",
        SYNC_COMPAT__WSTOKEN=TEST_TOKENS["compat"],
        SYNC_WEBHOOKS__MOODLE_TOKEN=TEST_TOKENS["moodle"],
    )
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 (our own CLI)
            [*moodle_sync_command(), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not _ready(base):
                assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.1)
            _exercise(base)
            time.sleep(0.5)  # the worker picks the events up (and logs what it does with them)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()
    secrets = [PASSWORD, TEST_TOKENS["compat"], TEST_TOKENS["moodle"], TEST_TOKENS["api"], TEST_TOKENS["coursesales"],
               TEST_TOKENS["secret_key"]]  # fmt: skip
    for secret in secrets:
        for form in _forms(secret):
            assert form not in text, f"{form!r} is in the log"
    access = [json.loads(line) for line in text.splitlines() if '"http.access"' in line]
    paths = {line["path"] for line in access}
    assert {COMPAT, "/webhooks/moodle", "/api/events", "/webhooks/coursesales"} <= paths, paths
    assert all("?" not in p for p in paths)
    # One log format, each thing said once: arq's per-queue start and stop lines are the CLI's single lines.
    events = [json.loads(line).get("event") for line in text.splitlines() if line.startswith("{")]
    assert events.count("worker.started") == 1 and events.count("worker.stopped") == 1
    assert not [e for e in events if str(e).startswith(("Starting worker", "shutdown on", "redis_version"))]
    assert all(line.startswith("{") for line in text.splitlines() if "logger" in line)
    loggers = {json.loads(line).get("logger") for line in text.splitlines() if line.startswith("{")}
    assert {
        "uvicorn.error",
        "uvicorn.access",
        "arq.worker",
        "aiosqlite" if "sqlite" in migrated else "asyncio",
    } <= loggers


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_scrub_masks_names_values_and_known_secrets() -> None:
    logs.register_secrets(["registered-secret-value"])
    try:
        line = (
            "GET /x?wstoken=abc123&users%5B0%5D%5Bpassword%5D=p%21w&users[1][password]=pw2&ok=1 "
            "{'password': 'hunter2', \"token\": \"t0k\"} Authorization: Bearer b3arer "
            "registered-secret-value"
        )
        out = logs.scrub(line + " " + quote("registered-secret-value", safe=""))
        for leaked in ("abc123", "p%21w", "pw2", "hunter2", "t0k", "b3arer", "registered-secret-value"):
            assert leaked not in out, out
        assert "ok=1" in out and "GET /x?" in out
    finally:
        logs.register_secrets([])
