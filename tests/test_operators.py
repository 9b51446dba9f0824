"""Named operators end to end: `moodle-sync operators add|list|remove|passwd` against the real database, the
password from standard input only, argon2id hashes, the session version, verify, and the audit trail."""

from __future__ import annotations

import getpass
import os
import pty
import select as io_select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlmodel import col

from app.db.accounts import Operator
from app.db.models import AuditEntry
from app.runtime import Runtime
from app.sync import operators as rules

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a new and longer passphrase"
ACTOR = f"cli:{getpass.getuser()}"


def cli_env(runtime: Runtime) -> dict[str, str]:
    return {
        **os.environ,
        "SYNC_MODE": "test",
        "SYNC_DATABASE_URL": runtime.settings.effective_database_url,
        "SYNC_CONFIG": str(ROOT / "no-such-config.toml"),
        "COLUMNS": "200",
    }


def cli(runtime: Runtime, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
        [sys.executable, "-m", "app.cli", "operators", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(runtime),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def on_a_terminal(runtime: Runtime, *args: str, answers: list[str]) -> tuple[int | None, str]:
    """The command on a pseudo-terminal, each answer typed once a prompt waits with the echo off."""
    master, terminal = pty.openpty()
    proc = subprocess.Popen(  # noqa: S603 (our own CLI, fixed arguments)
        [sys.executable, "-m", "app.cli", "operators", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=cli_env(runtime),
        cwd=ROOT,
        start_new_session=True,
    )
    seen, pending, deadline = b"", list(answers), time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            asked = seen.endswith(b": ") and not termios.tcgetattr(terminal)[3] & termios.ECHO
            if pending and asked:
                os.write(master, (pending.pop(0) + "\n").encode())
                seen += b"<typed>"
            if io_select.select([master], [], [], 0.05)[0]:
                seen += os.read(master, 4096)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(terminal)
    while io_select.select([master], [], [], 0.1)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal's other end is closed: all is read
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


async def operator(runtime: Runtime, name: str) -> Operator | None:
    async with runtime.sessions() as s:
        return (await s.execute(select(Operator).where(col(Operator.name) == name))).scalars().first()


async def verify(runtime: Runtime, name: str, password: str) -> Operator | None:
    async with runtime.sessions() as s:
        found = await rules.verify(s, name, password)
        await s.commit()
        return found


async def test_operators_from_the_command_line(runtime: Runtime) -> None:
    said: list[str] = []

    def run(*args: str, stdin: str = "", status: int = 0) -> str:
        done = cli(runtime, *args, stdin=stdin)
        said.append(done.stdout + done.stderr)
        assert done.returncode == status, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return " ".join((done.stdout + done.stderr).split())

    assert "operator alice added (admin)" in run("add", "alice", stdin=PASSWORD + "\n")
    assert "operator bob.viewer@example.org added (viewer)" in run(
        "add", "Bob.Viewer@Example.org", "--viewer", stdin=PASSWORD
    )
    listed = run("list")
    assert "alice" in listed and "admin" in listed and "bob.viewer@example.org" in listed and "viewer" in listed

    # Refusals: one clear line each, non-zero, nothing written.
    assert run("add", "ALICE", stdin=PASSWORD, status=1) == "operator alice exists already"
    assert run("add", "carol", stdin="too short\n", status=1) == "a password needs at least 12 characters"
    assert "an operator's name is 1 to 64 characters" in run("add", "bad name!", stdin=PASSWORD, status=1)
    assert "an operator's name" in run("add", "x" * 65, stdin=PASSWORD, status=1)
    assert "no password on standard input" in run("add", "carol", status=1)
    assert run("passwd", "nobody", stdin=NEW_PASSWORD, status=1) == "no operator nobody"
    assert run("remove", "nobody", status=1) == "no operator nobody"
    assert await operator(runtime, "carol") is None

    alice = await operator(runtime, "alice")
    assert alice is not None and alice.role == "admin" and alice.session_version == 1
    assert alice.password_hash.startswith("$argon2id$")
    assert (await verify(runtime, "alice", PASSWORD)) is not None
    assert (await verify(runtime, "Alice", PASSWORD)) is not None  # names are case-insensitive
    assert (await verify(runtime, "alice", NEW_PASSWORD)) is None
    assert (await verify(runtime, "nobody", PASSWORD)) is None

    # A new password: a new hash, and the sessions signed with the old version are over.
    assert "password of alice changed" in run("passwd", "alice", stdin=NEW_PASSWORD + "\r\n")
    changed = await operator(runtime, "alice")
    assert changed is not None and changed.password_hash != alice.password_hash and changed.session_version == 2
    assert (await verify(runtime, "alice", PASSWORD)) is None
    assert (await verify(runtime, "alice", NEW_PASSWORD)) is not None

    assert "operator alice removed" in run("remove", "alice")
    assert "alice" not in run("list")
    assert (await verify(runtime, "alice", NEW_PASSWORD)) is None
    # Added again, the name's version keeps growing: no cookie of the old account comes back to life.
    run("add", "alice", stdin=PASSWORD)
    again = await operator(runtime, "alice")
    assert again is not None and again.session_version == 4 and again.removed_at is None

    async with runtime.sessions() as s:
        trail = list((await s.execute(select(AuditEntry).order_by(col(AuditEntry.id)))).scalars())
    assert [(a.actor, a.action, a.target) for a in trail] == [
        (ACTOR, "operator.add", "operator:alice"),
        (ACTOR, "operator.add", "operator:bob.viewer@example.org"),
        (ACTOR, "operator.passwd", "operator:alice"),
        (ACTOR, "operator.remove", "operator:alice"),
        (ACTOR, "operator.add", "operator:alice"),
    ]
    written = " ".join(said) + " ".join(f"{a.target} {a.note}" for a in trail)
    for secret in (PASSWORD, NEW_PASSWORD, "too short"):
        assert secret not in written


async def test_on_a_terminal_the_password_is_asked_twice_without_echo(runtime: Runtime) -> None:
    status, shown = on_a_terminal(runtime, "add", "gina", answers=[PASSWORD, "a mistyped password", PASSWORD, PASSWORD])
    assert status == 0, shown
    assert shown.count("password for gina (at least 12 characters): ") == 2, shown
    assert "do not match" in shown and "operator gina added (admin)" in shown
    assert PASSWORD not in shown and "mistyped" not in shown
    assert (await verify(runtime, "gina", PASSWORD)) is not None


async def test_verify_costs_a_hash_for_an_unknown_name(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal takes as long for a name that does not exist (or cannot) as for a wrong password."""
    async with runtime.sessions() as s:
        await rules.add(s, "dana", PASSWORD, actor="test")
        await s.commit()
    hashed: list[str] = []
    real = rules._matches

    def counting(stored: str, password: str) -> bool:
        hashed.append(stored)
        return real(stored, password)

    monkeypatch.setattr(rules, "_matches", counting)
    for name in ("dana", "nobody", "not a name!"):
        assert await verify(runtime, name, "wrong password here") is None
    assert len(hashed) == 3 and all(h.startswith("$argon2id$") for h in hashed)


async def test_an_old_hash_is_renewed_on_a_right_password(runtime: Runtime) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    async with runtime.sessions() as s:
        s.add(Operator(name="erin", password_hash=weak.hash(PASSWORD), role="viewer"))
        await s.commit()
    assert await verify(runtime, "erin", "not the password") is None
    before = await operator(runtime, "erin")  # a wrong password renews nothing
    assert before is not None and rules.hasher.check_needs_rehash(before.password_hash)
    assert await verify(runtime, "erin", PASSWORD) is not None
    after = await operator(runtime, "erin")
    assert after is not None and not rules.hasher.check_needs_rehash(after.password_hash)
    assert after.session_version == before.session_version  # the same password: its sessions go on
    assert await verify(runtime, "erin", PASSWORD) is not None


async def test_rules_refuse_what_the_cli_refuses(runtime: Runtime) -> None:
    async with runtime.sessions() as s:
        with pytest.raises(rules.OperatorError, match="at least 12"):
            await rules.add(s, "frank", "x" * 11, actor="test")
        with pytest.raises(rules.OperatorError, match="at most"):
            await rules.add(s, "frank", "x" * 1025, actor="test")
        with pytest.raises(rules.OperatorError, match="1 to 64"):
            await rules.add(s, "", PASSWORD, actor="test")
        await rules.add(s, "frank", "x" * 12, actor="test")
        with pytest.raises(rules.OperatorError, match="at least 12"):
            await rules.change_password(s, "frank", "short", actor="test")
        assert [o.name for o in await rules.list_operators(s)] == ["frank"]
