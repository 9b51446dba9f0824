"""Every tenant command of the CLI takes ``--tenant``: it reads and changes that tenant's rows only, and an unknown
slug is refused before anything is done."""

from __future__ import annotations

import subprocess

from sqlalchemy import select

from app.db.models import AuditEntry, Event
from app.db.tenancy import ALL_TENANTS
from app.sync import operations
from tests.test_tenant_hub import BETA, Two, cs_auth, registration, settings, two  # noqa: F401  (fixtures)
from tests.test_tenants import cli


def run(hub: Two, *args: str, stdin: str = "", status: int = 0) -> str:
    done: subprocess.CompletedProcess[str] = cli(hub.home, *args, stdin=stdin)
    assert done.returncode == status, (args, done.stdout, done.stderr)
    return done.stdout + done.stderr


async def test_the_commands_act_on_the_tenant_they_are_given(two: Two) -> None:  # noqa: F811
    c = two.client
    r = await c.post(
        "/t/beta/webhooks/coursesales", json=registration("d-cli"), headers=cs_auth(BETA["WEBHOOKS__COURSESALES_TOKEN"])
    )
    beta_event = r.json()["event_id"]
    # Listed for beta, not for default.
    assert "registration.registered" in run(two, "events", "--tenant", "beta")
    assert "registration.registered" not in run(two, "events")
    # Paused: beta alone; its audit entry is beta's.
    run(two, "pause", "--tenant", "beta", "--note", "beta's Moodle upgrade")
    beta, _ = await two.home.hub.by_slug("beta")
    assert beta is not None
    async with beta.sessions() as s:
        assert await operations.paused(s) is not None
        assert [a.action for a in (await s.execute(select(AuditEntry))).scalars()] == ["pause"]
    async with two.home.sessions() as s:
        assert await operations.paused(s) is None
    run(two, "resume", "--tenant", "beta")
    # An operator belongs to its tenant: the same name may be another tenant's operator.
    run(two, "operators", "add", "alice", "--tenant", "beta", stdin="a-long-password-for-alice\n")
    assert "alice" in run(two, "operators", "list", "--tenant", "beta")
    assert "alice" not in run(two, "operators", "list")
    run(two, "operators", "add", "alice", stdin="another-long-password\n")
    # Another tenant's event id is not found; an unknown tenant is refused.
    assert "no event" in run(two, "replay", str(beta_event), status=1).lower()
    assert "no tenant nope" in run(two, "events", "--tenant", "nope", status=2)
    async with two.home.sessions() as s:
        every = (await s.execute(select(Event).execution_options(**ALL_TENANTS))).scalars().all()
    assert [(e.id, e.tenant_id != 0) for e in every] == [(beta_event, True)]
