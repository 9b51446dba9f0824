"""Diagnose (issue 19): why can this student not see this course? One walk of the chain, from the real flows against
the fakes: each failing link names the right next step, an all-green walk, Moodle not answering, the CLI's exits."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.db.models import UserLink
from app.runtime import Runtime
from app.sync.diagnose import Query, walk
from tests import procs
from tests.conftest import TEST_TOKENS, bearer
from tests.helpers import cancel, links, post_contact, process_all, register, settle
from tests.procs import ServedApp
from tests.test_users_sync import seed_user

MOODLE_READS = frozenset(
    {
        "core_user_get_users_by_field",
        "core_course_get_courses_by_field",
        "core_enrol_get_enrolled_users",
        "core_completion_get_course_completion_status",
        "core_enrol_get_users_courses",
        "core_webservice_get_site_info",
    }
)
CS_WRITES = ("Status", "Documents")  # the process step and the registration post: never sent by a diagnosis
MAX_READS = 8
SECRETS = ("test-token", "SOAP_PASSWORD", "S3cret!pass", TEST_TOKENS["api"])


async def ask(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/diagnose", params=params, headers=bearer("api"))
    assert r.status_code == 200, r.text
    assert not any(secret in r.text for secret in SECRETS), "no secret in the answer"
    body: dict[str, Any] = r.json()
    assert set(body) == {"ok", "next_step", "links", "contact", "course_date", "document"}
    assert all(set(k) == {"area", "name", "ok", "summary", "detail"} for k in body["links"])
    return body


@pytest.fixture(autouse=True)
def running(catalogue: Any) -> Iterator[None]:
    """Course date RUNNING in mapped category 500, from yesterday to a month from now."""
    today = date.today()
    catalogue.add_course_date(RUNNING, today - timedelta(days=1), today + timedelta(days=30), 500)
    yield


def link(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = [k for k in body["links"] if k["name"] == name]
    assert found, f"no link {name}: {[k['name'] for k in body['links']]}"
    return found[0]


def first_failing(body: dict[str, Any]) -> dict[str, Any]:
    failing = [k for k in body["links"] if k["ok"] is False]
    assert failing and body["ok"] is False, body
    return failing[0]


RUNNING = 9500  # a course date running now (the catalogue's are in December 2026: maybe over already)


async def enrolled(client: httpx.AsyncClient, runtime: Runtime, course_date: int = RUNNING) -> tuple[int, int]:
    """Jane Doe (contact 1234) registered for ``course_date`` and settled: (Moodle user id, Moodle course id)."""
    await register(client, "r-1", "D-1", course_date)
    await settle(runtime)
    (user,) = await links(runtime)
    body = await ask(client, contact="1234", course_date=str(course_date))
    return user.moodle_user_id, int(link(body, "course.exists")["summary"].split()[2])


async def test_an_all_green_walk_in_a_handful_of_reads(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    await enrolled(client, runtime)
    moodle_before, cs_before = len(moodle_fake.calls), len(catalogue.requests)
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    assert body["ok"] is True and all(k["ok"] is True for k in body["links"]), body
    assert body["next_step"].startswith("nothing to fix") and "jane.doe@example.com" in body["next_step"]
    assert (body["contact"], body["course_date"], body["document"]) == ("contact:1234", RUNNING, "D-1")
    assert {k["area"] for k in body["links"]} == {"coursesales", "sync", "moodle"}
    names = [k["name"] for k in body["links"]]
    for name in ("contact.password", "course_date.public", "course_master.public", "category.mapped", "user.link",
                 "course.link", "enrolment.link", "user.suspended", "course.visible", "enrolment.dates", "completion"):  # fmt: skip
        assert name in names
    moodle_calls, cs_calls = moodle_fake.calls[moodle_before:], catalogue.requests[cs_before:]
    assert len(moodle_calls) + len(cs_calls) <= MAX_READS
    assert {function for function, _ in moodle_calls} <= MOODLE_READS, "Moodle is only read"
    assert not [r for r in cs_calls if any(key in r for key in CS_WRITES)], "CourseSales is only read"
    for other in ("jane.doe@example.com", "Jane.Doe@example.com", "contact:1234"):  # a username, an email, a key
        assert (await ask(client, contact=other, document="D-1"))["contact"] == "contact:1234"


async def test_a_private_course_date(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any) -> None:
    catalogue.add_course_date(9300, "2026-12-20", "2026-12-20", 500, visibility=1)
    await register(client, "r-1", "D-1", 9300)
    await settle(runtime)
    body = await ask(client, contact="1234", course_date="9300")
    assert first_failing(body)["name"] == "course_date.public"
    assert body["next_step"].startswith("make course date 9300 public in CourseSales")


async def test_an_unmapped_category(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any) -> None:
    await register(client, "r-1", "D-1", 9100)
    await settle(runtime)
    body = await ask(client, contact="1234", document="D-1")
    assert first_failing(body)["name"] == "category.mapped" and body["course_date"] == 9100
    assert body["next_step"].startswith("map CourseSales category 600 to a Moodle category: set its Moodle Category Id")


async def test_a_contact_without_password(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "c-1", password=None)
    await settle(runtime)
    body = await ask(client, contact="1234")
    assert first_failing(body)["name"] == "contact.password"
    assert "portal login with a password" in body["next_step"]


async def test_an_inactive_contact(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_contact(client, "c-1", active=False)
    await settle(runtime)
    body = await ask(client, contact="jane.doe@example.com")
    assert first_failing(body)["name"] == "contact.active"
    assert body["next_step"].startswith("make contact contact:1234 active in CourseSales")


async def test_a_cancelled_document(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any) -> None:
    await enrolled(client, runtime)
    await cancel(client, "x-1", "D-1", RUNNING)
    await settle(runtime)
    body = await ask(client, contact="1234", document="D-1")
    assert first_failing(body)["name"] == "document.registered"
    assert "was cancelled in CourseSales" in body["next_step"] and "register them again" in body["next_step"]
    assert link(body, "enrolment.link")["ok"] is False, "our enrolment was suspended with it"


async def test_a_user_suspended_in_moodle(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    user_id, _ = await enrolled(client, runtime)
    moodle_fake.users[user_id]["suspended"] = True
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    assert first_failing(body)["name"] == "user.suspended"
    assert body["next_step"].startswith("unsuspend jane.doe@example.com in Moodle")


async def test_a_user_deleted_in_moodle(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    user_id, _ = await enrolled(client, runtime)
    moodle_fake.delete_user(user_id)
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    assert first_failing(body)["name"] == "user.exists" and "was deleted" in first_failing(body)["summary"]
    assert "makes it again" in body["next_step"] and "do-not-sync" in body["next_step"]


async def test_a_hidden_course(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any) -> None:
    _, course_id = await enrolled(client, runtime)
    moodle_fake.courses[course_id]["visible"] = 0
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    assert first_failing(body)["name"] == "course.visible"
    assert body["next_step"].startswith(f"show Moodle course {course_id}")


async def test_a_suspended_enrolment(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    user_id, course_id = await enrolled(client, runtime)
    moodle_fake.enrolments[(user_id, course_id)]["status"] = 1  # suspended by hand
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    assert first_failing(body)["name"] == "enrolment.active"
    assert body["next_step"].startswith("the enrolment is suspended in Moodle: set it active")


async def test_enrolment_dates_over(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any) -> None:
    catalogue.add_course_date(9400, "2020-01-01", "2020-01-02", 500)
    await register(client, "r-1", "D-1", 9400)
    await settle(runtime)
    body = await ask(client, contact="1234", course_date="9400")
    assert first_failing(body)["name"] == "enrolment.dates"
    assert body["next_step"].startswith("the enrolment ended on 2020-01-02")
    assert link(body, "enrolment.active")["ok"] is None, "Moodle does not tell a suspension apart from the dates"


async def test_an_event_waiting_for_moodle(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    moodle_fake.maintenance(True)
    await post_contact(client, "c-1")
    await process_all(runtime)
    moodle_fake.maintenance(False)
    body = await ask(client, contact="1234")
    failing = first_failing(body)
    assert failing["area"] == "sync" and failing["name"].startswith("event.") and "waits" in failing["summary"]
    assert body["next_step"].startswith("Moodle is in maintenance") and "resumes by itself" in body["next_step"]
    assert link(body, "contact.password")["ok"] is True, "the password waits with its event"


async def test_moodle_not_answering(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    await enrolled(client, runtime)
    moodle_fake.maintenance(True)
    before = len(moodle_fake.calls)
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    moodle = [k for k in body["links"] if k["area"] == "moodle"]
    assert moodle and all(k["ok"] is None and "Moodle did not answer" in k["summary"] for k in moodle), moodle
    assert all(k["ok"] is True for k in body["links"] if k["area"] != "moodle"), "the rest still shows"
    assert body["ok"] is False and body["next_step"].startswith("ask again once Moodle answers")
    assert len(moodle_fake.calls) - before <= 2, "no more reads once Moodle did not answer"
    moodle_fake.maintenance(False)
    moodle_fake.latency = 3.0  # each read bounded in time
    started = time.monotonic()
    slow = await walk(sessions=runtime.sessions, moodle=runtime.moodle, coursesales=runtime.coursesales,
                      settings=runtime.settings, query=Query(contact="1234", course_date=RUNNING), timeout=0.3)  # fmt: skip
    assert time.monotonic() - started < 2.5
    user = next(k for k in slow.links if k.name == "user.exists")
    assert user.ok is None and "did not answer within 0.3 s" in user.summary and not slow.ok


async def test_coursesales_not_answering(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any) -> None:
    await enrolled(client, runtime)
    before = catalogue.calls
    catalogue.fail_next(3, "500")
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    listed = link(body, "course_date.listed")
    assert (
        listed["ok"] is None
        and "could not ask CourseSales" in listed["summary"]
        and "as last read" in listed["summary"]
    )
    assert catalogue.calls - before == 1, "no more reads once CourseSales did not answer"
    assert link(body, "course_date.public")["ok"] is True, "what CourseSales said last still shows"
    assert all(k["ok"] is True for k in body["links"] if k["area"] == "moodle"), "Moodle is still checked"
    assert body["ok"] is False and body["next_step"].startswith("ask again once CourseSales answers")


async def test_a_course_date_without_a_contact(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    user_id, course_id = await enrolled(client, runtime)
    body = await ask(client, course_date=str(RUNNING))
    assert body["ok"] is True and body["contact"] is None, body
    assert (
        "1 registered (1 with a Moodle user); Moodle has 1 enrolled, 1 active"
        in link(body, "enrolments.count")["summary"]
    )
    del moodle_fake.enrolments[(user_id, course_id)]
    body = await ask(client, course_date=str(RUNNING))
    assert first_failing(body)["name"] == "enrolments.count" and "missing: 1" in first_failing(body)["detail"]
    assert body["next_step"].startswith("POST /api/reconcile")


async def test_an_adoption_refused(client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any) -> None:
    account = seed_user(moodle_fake, "jane.doe@example.com", "jane.doe@example.com")  # made by hand in Moodle
    await post_contact(client, "c-1")
    await settle(runtime)
    body = await ask(client, contact="1234")
    failing = first_failing(body)
    assert failing["name"].startswith("event.") and "needs_review" in failing["summary"]
    assert "link it by hand" in body["next_step"] and "replay event" in body["next_step"]
    assert link(body, "user.link")["summary"].startswith("adoption refused")
    assert link(body, "user.exists")["summary"] == (
        f"Moodle user {account['id']} (jane.doe@example.com) exists but is not linked to contact:1234"
    )


async def test_a_contact_marked_do_not_sync(client: httpx.AsyncClient, runtime: Runtime, catalogue: Any) -> None:
    await enrolled(client, runtime)
    put = await client.put("/api/contacts/1234/do-not-sync", json={"note": "erasure"}, headers=bearer("api"))
    assert put.status_code == 200, put.text
    body = await ask(client, contact="1234", course_date=str(RUNNING))
    failing = first_failing(body)
    assert (failing["name"], failing["detail"]) == ("contact.do_not_sync", "erasure")
    assert "`moodle-sync do-not-sync contact:1234 --undo`" in body["next_step"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"contact": "1234", "course_date": "9000", "document": "D-1"}, "document"),
        ({}, "contact"),
        ({"document": "D-1"}, "contact"),
        ({"contact": "1234", "course_date": "0"}, "course_date"),
        ({"contact": "x" * 256}, "contact"),
    ],
)
async def test_a_bad_query_is_a_422_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    r = await client.get("/api/diagnose", params=params, headers=bearer("api"))
    assert r.status_code == 422, r.text
    assert field in [e["loc"][-1] for e in r.json()["detail"]]


async def test_the_read_token_may_ask_and_nobody_else(client: httpx.AsyncClient, runtime: Runtime) -> None:
    read = "read-only-token-for-diagnose"
    runtime.settings.api = runtime.settings.api.model_copy(update={"read_token": SecretStr(read)})
    assert (
        await client.get("/api/diagnose?contact=1234", headers={"Authorization": f"Bearer {read}"})
    ).status_code == 200
    assert (await client.get("/api/diagnose?contact=1234")).status_code == 401
    body = await ask(client, contact="1234")
    assert (
        first_failing(body)["name"] == "contact.known"
        and "never received contact:1234" in first_failing(body)["summary"]
    )


async def test_the_user_link_alone_identifies_the_contact(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """A contact linked by hand, whose events are purged, is still found by its username."""
    async with runtime.sessions() as s:
        s.add(UserLink(contact_id=77, username="kim", moodle_user_id=4242))
        await s.commit()
    body = await ask(client, contact="kim")
    assert body["contact"] == "contact:77" and link(body, "contact.known")["ok"] is True


def run_cli(runtime: Runtime, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return procs.run_cli(runtime.settings.effective_database_url, "diagnose", *args, timeout=60, **env)


async def test_the_cli_report_and_its_exit_codes(
    client: httpx.AsyncClient, runtime: Runtime, catalogue: Any, moodle_fake: Any
) -> None:
    """0 all is well, 1 a link fails, 2 bad usage; the same walk as the API, readable."""
    await enrolled(client, runtime)
    with ServedApp(moodle_fake) as moodle, ServedApp(catalogue) as coursesales:
        upstreams = {
            "SYNC_MOODLE__URL": moodle.url,
            "SYNC_MOODLE__TOKEN": "test-token",
            "SYNC_COURSESALES__URL": coursesales.url,
            "SYNC_COURSESALES__USERNAME": catalogue.username,
            "SYNC_COURSESALES__PASSWORD": catalogue.password,
        }
        well = run_cli(runtime, "1234", "--course-date", str(RUNNING), **upstreams)
        assert well.returncode == 0, well.stdout + well.stderr
        assert "all is well: nothing to fix" in well.stdout and "pass  course_date.public" in well.stdout
        assert "Moodle" in well.stdout and "CourseSales" in well.stdout
        unknown = run_cli(runtime, "999", **upstreams)
        assert unknown.returncode == 1, unknown.stdout + unknown.stderr
        assert "FAIL  contact.known: we never received contact:999" in unknown.stdout
        assert "next step: make CourseSales send contact contact:999" in unknown.stdout
        suspended = run_cli(runtime, "jane.doe@example.com", "--document", "D-1", **upstreams)
        assert suspended.returncode == 0, "by username and Document alike"
        moodle_fake.maintenance(True)
        down = run_cli(runtime, "1234", "--course-date", str(RUNNING), **upstreams)
        assert down.returncode == 1 and "????  user.exists: not checked: Moodle did not answer" in down.stdout
        for output in (well, unknown, down):
            assert not any(secret in output.stdout + output.stderr for secret in SECRETS)
    both = run_cli(runtime, "1234", "--course-date", "1", "--document", "D-1")
    assert both.returncode == 2 and "--document: give either course_date or document" in both.stderr
    assert run_cli(runtime).returncode == 2
    assert run_cli(runtime, "1234", "--course-date", "0").returncode == 2
