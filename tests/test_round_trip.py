"""The round-trip check (issue 24) against the fakes: every kind of call the sync makes, on scratch objects made once
and reused; a refusal named with its fix and a non-zero exit; safe on a live site (maintenance, one at a time, a
crash half way); CourseSales read only; the API keeps the result; the CLI's exit codes."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db import leases
from app.db.models import Run, UpstreamState
from app.db.types import utcnow
from app.runtime import Runtime
from app.sync import round_trip
from app.sync.round_trip import STEPS, Timeouts, run_round_trip, stored_round_trip
from app.sync.round_trip_model import Report, Step
from tests import procs
from tests.conftest import TEST_TOKENS, bearer
from tests.fakes.moodle import USERS_COURSES
from tests.procs import ServedApp

PREFIX = "zz-moodle-sync-check"
FAST = Timeouts(step=5.0, slow=10.0)
WRITES = frozenset(
    {"core_user_create_users", "core_course_create_courses", "core_course_duplicate_course"}
)  # the calls that make something new
CS_WRITES = ("Status", "Documents")  # a process step, a registration: never sent by the check
SECRETS = ("test-token", "SOAP_PASSWORD", TEST_TOKENS["api"])


@pytest.fixture
def moodle_fake(request: pytest.FixtureRequest) -> Any:
    """The 4.3 site, or the line a test asks for (parametrized indirectly)."""
    from tests.fakes.moodle import MoodleFake

    return MoodleFake(version=getattr(request, "param", "4.3"), token="test-token")


@pytest.fixture
def site(runtime: Runtime, moodle_fake: Any, catalogue: Any) -> Any:
    """A healthy site: 4.3 with the completion pull's function, a category whose courses copy the template."""
    moodle_fake.add_function(USERS_COURSES)
    catalogue.add_category(700, "Copied courses", moodle_category_id="2", template="TEMPLATE-101")
    runtime.settings.completion.process_step_id = 77
    return moodle_fake


async def check(runtime: Runtime, **kw: Any) -> Report:
    report = await run_round_trip(runtime, timeouts=FAST, **kw)
    assert not any(secret in str(report) for secret in SECRETS)
    return report


def step(report: Report, name: str) -> Any:
    (found,) = [s for s in report.steps if s.name == name]
    return found


def scratch(fake: Any) -> tuple[list[int], list[int]]:
    users = [u["id"] for u in fake.users.values() if u["username"].startswith(PREFIX)]
    courses = [c["id"] for c in fake.courses.values() if c["shortname"].startswith(PREFIX)]
    return users, courses


def unsorted(courses: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Courses but their sort order (Moodle renumbers a category's courses when one is added to it)."""
    return {k: {f: v for f, v in c.items() if f != "sortorder"} for k, c in courses.items()}


@pytest.mark.parametrize("moodle_fake", ["4.3", "5.0"], indirect=True)
async def test_all_steps_pass_and_a_second_run_makes_nothing_new(runtime: Runtime, site: Any, catalogue: Any) -> None:
    real = copy.deepcopy((site.users, unsorted(site.courses), site.enrolments))
    first = await check(runtime)
    assert first.ok and first.exit_code == 0, [(s.name, s.status, s.summary, s.meaning) for s in first.steps]
    assert [s.name for s in first.steps] == [s.name for s in STEPS]
    assert (first.moodle_release, first.moodle_version) == (site.release, site.site_version)
    assert all(s.seconds >= 0 for s in first.steps)
    assert step(first, "coursesales.completion_step").status == "assumed"
    assert "docs/coursesales-assumptions.md" in step(first, "coursesales.completion_step").meaning
    assert "Moodle category 2 ('Copied courses')" in step(first, "coursesales.categories").summary
    (user,), courses = scratch(site)
    assert len(courses) == 2, "the scratch course and the scratch copy"
    assert site.users[user]["suspended"] is True, "left suspended"
    assert all(not site.courses[c]["visible"] for c in courses), "left hidden"
    assert not [k for k in site.enrolments if k[0] == user], "unenrolled"
    the_copy = next(c for c in courses if site.courses[c]["shortname"] == f"{PREFIX}-copy")
    assert site.courses[the_copy]["idnumber"] == f"{PREFIX}-copy" and site.courses[the_copy]["criteria"] == [1]
    calls_before = len(site.calls)

    second = await check(runtime)
    assert second.ok, [(s.name, s.status, s.summary, s.meaning) for s in second.steps]
    assert scratch(site) == ([user], courses), "no new user or course"
    made = [f for f, _ in site.calls[calls_before:] if f in WRITES - {"core_course_duplicate_course"}]
    assert made == [], "found and reused, not made again"
    assert "reused" in step(second, "moodle.user.lookup").summary
    assert "none made" in step(second, "moodle.copy.duplicate").summary
    assert site.courses[the_copy]["idnumber"] == f"{PREFIX}-copy-2", "the idnumber changes, so Moodle checks the right"
    assert not [r for r in catalogue.requests if any(k in r for k in CS_WRITES)], "CourseSales is only read"
    users, courses = scratch(site)
    after = (
        {k: u for k, u in site.users.items() if k not in users},
        unsorted({k: c for k, c in site.courses.items() if k not in courses}),
        site.enrolments,
    )
    assert after == real, "no real user, course or enrolment touched"


async def test_a_function_removed_from_the_service(runtime: Runtime, site: Any) -> None:
    site.remove_function("core_course_duplicate_course")
    report = await check(runtime)
    assert report.exit_code == 1
    assert step(report, "moodle.site_info").status == "warn"
    assert "core_course_duplicate_course" in step(report, "moodle.site_info").meaning
    failed = step(report, "moodle.copy.duplicate")
    assert failed.status == "failed" and "accessexception" in failed.summary
    assert failed.meaning.startswith("core_course_duplicate_course is not in the token's external service")
    assert "course duplication will fail" in failed.meaning and "add core_course_duplicate_course" in failed.fix
    assert step(report, "moodle.copy.idnumber").summary == "not run: moodle.copy.duplicate did not pass"
    assert step(report, "moodle.enrol").status == "ok", "the rest is still proved"


async def test_a_role_refusing_course_duplication(runtime: Runtime, site: Any) -> None:
    await check(runtime)  # the copy exists: a later run still asks Moodle, which checks the capability first
    for run in ("first", "later"):
        if run == "first":
            site.courses = {k: c for k, c in site.courses.items() if c["shortname"] != f"{PREFIX}-copy"}
        site.refuse_capability("moodle/restore:restorecourse")
        report = await check(runtime)
        failed = step(report, "moodle.copy.duplicate")
        assert report.exit_code == 1 and failed.status == "failed", run
        assert "[nopermissions]" in failed.summary and "(Restore courses)" in failed.summary
        assert failed.meaning == (
            "moodle/restore:restorecourse missing from the token's role: course duplication will fail "
            "(course dates whose category names a template)"
        )
        assert failed.fix.startswith("give the role moodle/restore:restorecourse (Site administration > Users")
        site.refuse_capability("moodle/restore:restorecourse", refused=False)
        await check(runtime)


async def test_the_token_user_suspended(runtime: Runtime, site: Any) -> None:
    site.suspend_token_user()
    report = await check(runtime)
    first = step(report, "moodle.site_info")
    assert report.exit_code == 1 and first.status == "failed" and "wsaccessusersuspended" in first.summary
    assert "the token's user is suspended" in first.meaning and first.fix.startswith("unsuspend the token's user")
    assert step(report, "moodle.user.write").summary == "not run: the token cannot be used for any call"
    assert step(report, "coursesales.course_dates").status == "ok", "CourseSales is still checked"


async def test_a_missing_completion_capability_is_named(runtime: Runtime, site: Any) -> None:
    site.refuse_capability("report/completion:view")
    failed = step(await check(runtime), "moodle.completion.read")
    assert failed.status == "failed" and failed.meaning.startswith("report/completion:view missing from the token's")


async def test_the_site_in_maintenance(runtime: Runtime, site: Any) -> None:
    site.maintenance(True)
    report = await check(runtime)
    assert report.exit_code == 1 and report.refused_code == "maintenance"
    assert "Moodle is in maintenance" in report.refused
    assert step(report, "moodle.site_info").fix == "run the check again once the upgrade is over"
    assert all(s.status == "blocked" for s in report.steps[1:]), "nothing else is done"
    assert [f for f, _ in site.calls] == ["core_webservice_get_site_info"]
    site.maintenance(False)
    async with runtime.sessions() as s:  # the service's probe recorded it: the check does not even start
        now = utcnow()
        s.add(UpstreamState(name="moodle", state="unavailable", reason="Moodle is in maintenance", since=now,
                            checked_at=now))  # fmt: skip
        await s.commit()
    calls = len(site.calls)
    held = await check(runtime)
    assert held.refused_code == "unavailable" and held.steps == [] and len(site.calls) == calls


async def test_one_at_a_time(runtime: Runtime, site: Any) -> None:
    async with runtime.sessions() as s:
        assert await leases.acquire(s, round_trip.LEASE, "someone-else", 60)
        await s.commit()
    busy = await check(runtime)
    assert busy.refused_code == "busy" and busy.exit_code == 1 and site.calls == []


class Crash(BaseException):
    """The process stopping between two steps (no step's handler may catch it)."""


async def crash(_: Any) -> Any:
    raise Crash


def crashing_at(name: str) -> Sequence[Step]:
    return [Step(s.name, s.upstream, s.call, crash, s.needs) if s.name == name else s for s in STEPS]


async def test_a_crash_between_steps_then_a_clean_run(runtime: Runtime, site: Any) -> None:
    with pytest.raises(Crash):
        await check(runtime, steps=crashing_at("moodle.copy.idnumber"))  # the copy made, its idnumber not set
    users, courses = scratch(site)
    orphan = next(c for c in site.courses.values() if c["shortname"] == f"{PREFIX}-copy")
    assert orphan["idnumber"] == "" and len(users) == 1 and len(courses) == 2
    async with runtime.sessions() as s:
        (row,) = (await s.execute(select(Run))).scalars()
        assert row.status == "running"
    clean = await check(runtime)
    assert clean.ok, [(s.name, s.status, s.summary, s.meaning) for s in clean.steps]
    assert "an interrupted run left it without its idnumber" in step(clean, "moodle.copy.lookup").summary
    assert scratch(site) == (users, courses), "the interrupted run's objects are reused"
    async with runtime.sessions() as s:
        rows = (await s.execute(select(Run).order_by(Run.id))).scalars().all()
        assert [(r.kind, r.status) for r in rows] == [("round_trip", "failed"), ("round_trip", "done")]
        assert rows[0].error.startswith("interrupted")


async def test_the_coursesales_half(runtime: Runtime, site: Any, catalogue: Any) -> None:
    report = await check(runtime)
    half = [s for s in report.steps if s.upstream == "coursesales"]
    assert [s.status for s in half] == ["ok", "ok", "ok", "assumed"]
    assert "5 course categories, 4 mapped (field 8620), 1 with a template" in half[1].summary
    assert "read a page of course dates: " in half[2].summary
    catalogue.categories.clear()
    catalogue.add_category(600, "Forklift")
    unmapped = step(await check(runtime), "coursesales.categories")
    assert unmapped.status == "failed" and "none mapped to a Moodle category" in unmapped.summary
    assert "Moodle Category Id" in unmapped.fix
    runtime.settings.completion.process_step_id = None
    catalogue.password = "changed"
    refused = await check(runtime)
    assert step(refused, "coursesales.login").fix.startswith("fix the web-services login")
    assert step(refused, "coursesales.completion_step").status == "blocked"
    assert step(refused, "moodle.course.write").summary == "not run: coursesales.categories did not pass"


async def test_the_api_runs_it_and_keeps_the_result(client: httpx.AsyncClient, site: Any) -> None:
    assert (await client.get("/api/check", headers=bearer("api"))).status_code == 404
    r = await client.post("/api/check", json={"round_trip": True}, headers=bearer("api"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["status"] == "done" and body["moodle_release"] == "4.3 (Build: 20231009)"
    assert {"name", "upstream", "call", "status", "summary", "meaning", "fix", "seconds"} == set(body["steps"][0])
    kept = (await client.get("/api/check", headers=bearer("api"))).json()
    assert kept == body
    site.maintenance(True)
    refused = await client.post("/api/check", json={"round_trip": True}, headers=bearer("api"))
    assert refused.status_code == 503 and "maintenance" in refused.json()["detail"]
    assert (await client.get("/api/check", headers=bearer("api"))).json()["refused_code"] == "maintenance"
    site.maintenance(False)
    plain = await client.post("/api/check", json={}, headers=bearer("api"))
    assert plain.status_code == 200 and plain.json()["round_trip"] is False and plain.json()["run_id"] is None
    assert (await client.post("/api/check", json={"round_trip": "maybe"}, headers=bearer("api"))).status_code == 422
    assert (await client.post("/api/check", json={"round_trip": True})).status_code == 401
    assert not any(secret in r.text for secret in SECRETS)


def run_cli(runtime: Runtime, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return procs.run_cli(runtime.settings.effective_database_url, "check", *args, timeout=120, **env)


async def test_the_cli_and_its_exit_codes(runtime: Runtime, site: Any, catalogue: Any) -> None:
    with ServedApp(site) as moodle, ServedApp(catalogue) as coursesales:
        upstreams = {
            "SYNC_MOODLE__URL": moodle.url,
            "SYNC_MOODLE__TOKEN": "test-token",
            "SYNC_COURSESALES__URL": coursesales.url,
            "SYNC_COURSESALES__USERNAME": catalogue.username,
            "SYNC_COURSESALES__PASSWORD": catalogue.password,
            "SYNC_COMPLETION__PROCESS_STEP_ID": "77",
        }
        well = run_cli(runtime, "--round-trip", **upstreams)
        assert well.returncode == 0, well.stdout + well.stderr
        assert "round trip: Moodle 4.3 (Build: 20231009), version 2023100900" in well.stdout
        assert "ok       moodle.copy.duplicate" in well.stdout and "assumed  coursesales.completion_step" in well.stdout
        site.refuse_capability("moodle/restore:restorecourse")
        refused = run_cli(runtime, "--round-trip", **upstreams)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "FAILED   moodle.copy.duplicate" in refused.stdout
        assert "means: moodle/restore:restorecourse missing from the token's role: course duplication will fail" in (
            refused.stdout
        )
        assert "fix:   give the role moodle/restore:restorecourse" in refused.stdout
        site.maintenance(True)
        down = run_cli(runtime, "--round-trip", **upstreams)
        assert down.returncode == 1 and "not started: Moodle is in maintenance" in down.stdout
        for output in (well, refused, down):
            assert not any(secret in output.stdout + output.stderr for secret in SECRETS)
    assert run_cli(runtime, "--round-trip").returncode == 1, "Moodle not configured"


async def test_the_last_result_is_read_back(runtime: Runtime, site: Any) -> None:
    made = await check(runtime)
    async with runtime.sessions() as s:
        kept = await stored_round_trip(s)
    assert kept is not None
    status, report = kept
    assert status == "done" and report.steps == made.steps and report.run_id == made.run_id
    assert report.finished_at - report.started_at < timedelta(minutes=1)
