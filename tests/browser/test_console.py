"""The console in a real chromium against a real `moodle-sync serve` with the fakes: an operator made with the CLI
signs in and works through every page. Each test saves its screenshot; with SYNC_TEST_SCREENSHOTS=docs one per page
goes to docs/console/ (the README shows them). Every test ends by checking that the page asked nothing of any other
host, broke no Content-Security-Policy rule and threw no script error."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from app.events.examples import coursesales_example
from tests.browser.conftest import Service, Visit, publish_screenshot
from tests.browser.console_steps import (
    PASSWORD,
    add_operator,
    assert_clean,
    clean,
    deliver,
    event_status,
    eventually,
    sign_in,
    sql,
)


@pytest.fixture
async def fresh(service: Service) -> Service:
    """Empty tables and an administrator `alice` and a viewer `victor`, made with the CLI."""
    await clean(service)
    add_operator(service, "alice")
    add_operator(service, "victor", viewer=True)
    return service


async def _contact_done(service: Service, delivery: str, contact_id: int) -> int:
    """A contact delivered and synced to the Moodle fake; its event's id."""
    body = coursesales_example("contact.upserted") | {"id": delivery}
    body["contact"] = body["contact"] | {"contact_id": contact_id, "username": f"student{contact_id}@example.com",
                                         "email": f"student{contact_id}@example.com"}  # fmt: skip
    await deliver(service, body)
    rows: list[Any] = []

    async def stored() -> bool:
        nonlocal rows
        rows = await sql(service, "SELECT id, status FROM events WHERE subject = :s", s=f"contact:{contact_id}")
        return bool(rows) and rows[0][1] == "done"

    await eventually(stored, what=f"contact {contact_id} synced")
    return int(rows[0][0])


async def test_an_operator_made_with_the_cli_signs_in_and_a_wrong_password_is_refused(
    visit: Visit, fresh: Service
) -> None:
    await visit.goto("/console/events")
    assert "/console/sign-in" in visit.page.url  # not signed in: sent to the form, to come back after
    await visit.page.fill("#name", "alice")
    await visit.page.fill("#password", "not the password at all")
    await visit.page.click("button[type=submit]")
    await visit.page.get_by_role("alert").wait_for()
    assert "Wrong name or password" in await visit.page.get_by_role("alert").inner_text()
    publish_screenshot(await visit.snap("sign-in"), "sign-in")

    await visit.page.fill("#password", PASSWORD)
    await visit.page.click("button[type=submit]")
    await visit.page.wait_for_url("**/console/events")
    assert "alice" in await visit.page.locator(".who").inner_text()
    cookie = next(c for c in await visit.page.context.cookies() if c["name"] == "csms_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    audit = await sql(fresh, "SELECT actor, action, target FROM audit WHERE action LIKE 'console.%' ORDER BY id")
    assert [tuple(a) for a in audit] == [
        ("console", "console.sign_in_failed", "operator:alice"),
        ("alice", "console.sign_in", None),
    ]

    # A changed password ends the session signed in with the old one.
    fresh.cli("operators", "passwd", "alice", stdin="another long password\n")
    await visit.goto("/console/events")
    assert "/console/sign-in" in visit.page.url
    assert_clean(visit)


async def test_the_overview_numbers_match_the_database(visit: Visit, fresh: Service) -> None:
    for n, status in enumerate(["failed", "failed", "needs_review", "retrying", "queued", "done", "done"]):
        await sql(fresh, "INSERT INTO events (tenant_id, source, kind, dedupe_key, body_hash, subject, status, attempts, "
                  "created_at, updated_at, next_attempt_at) VALUES (0, 'coursesales', 'contact.upserted', :k, '-', "
                  ":s, :st, 1, now() - interval '2 hours', now(), now() + interval '1 hour')",
                  k=f"seed-{n}", s=f"contact:{90000 + n}", st=status)  # fmt: skip
    # Attempts over the last hours, for the chart: ten done and two failed an hour ago, five done now.
    await sql(fresh, "INSERT INTO attempts (tenant_id, event_id, number, started_at, finished_at, outcome) SELECT 0, e.id, n, "
              "now() - interval '1 hour', now() - interval '1 hour', CASE WHEN n <= 2 THEN 'failed' ELSE 'done' END "
              "FROM (SELECT min(id) AS id FROM events) e, generate_series(1, 12) n")  # fmt: skip
    await sql(fresh, "INSERT INTO attempts (tenant_id, event_id, number, started_at, finished_at, outcome) SELECT 0, e.id, 12 + n, "
              "now(), now(), 'done' FROM (SELECT min(id) AS id FROM events) e, generate_series(1, 5) n")  # fmt: skip
    await sign_in(visit, "alice")
    counts = {row[0]: row[1] for row in await sql(fresh, "SELECT status, count(*) FROM events GROUP BY status")}
    page = visit.page
    assert await page.locator("#count-failed .number").inner_text() == str(counts["failed"])
    assert await page.locator("#count-needs-review .number").inner_text() == str(counts["needs_review"])
    assert await page.locator("#count-retrying .number").inner_text() == str(counts["retrying"])
    assert await page.locator("#count-open .number").inner_text() == str(counts["queued"])
    assert "2 h" in await page.locator("#oldest").inner_text()
    # The health tiles load after the page, each on its own.
    await page.locator("#tile-database.ok").wait_for(timeout=15_000)
    await page.locator("#tile-redis.ok").wait_for(timeout=15_000)
    await page.locator("#tile-coursesales.ok").wait_for(timeout=15_000)
    await page.locator("#tile-moodle.ok").wait_for(timeout=15_000)
    await page.wait_for_function("document.querySelector('#per-hour') && window.Chart && "
                                 "Chart.getChart(document.querySelector('#per-hour'))")  # fmt: skip
    # The chart shows what the attempts say: its datasets' totals by outcome.
    drawn = await page.evaluate("""() => Object.fromEntries(Chart.getChart(document.querySelector('#per-hour'))
        .data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)]))""")
    assert drawn["done"] == 15 and drawn["failed"] == 2, drawn
    assert any(url.endswith("/console/data/per-hour?window=24h") for url in visit.requests)
    publish_screenshot(await visit.snap("overview"), "overview")
    assert_clean(visit)


async def test_the_overview_at_a_phones_width_and_by_keyboard(visit: Visit, fresh: Service) -> None:
    await sign_in(visit, "alice")
    await visit.page.set_viewport_size({"width": 390, "height": 844})
    await visit.goto("/console")
    await visit.page.locator("#tile-database.ok").wait_for(timeout=15_000)
    width = await visit.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at 390"
    await visit.page.keyboard.press("Tab")  # the skip link first, then the console's own links
    assert await visit.page.evaluate("document.activeElement.textContent.trim()") == "Skip to the page"
    await visit.page.keyboard.press("Tab")
    await visit.page.keyboard.press("Tab")
    assert await visit.page.evaluate("document.activeElement.textContent.trim()") == "Overview"
    await visit.page.keyboard.press("Tab")
    await visit.page.keyboard.press("Enter")
    await visit.page.wait_for_url("**/console/events")
    await _search_placeholder_is_read_whole(visit)
    publish_screenshot(await visit.snap("events-phone", full_page=False), "events-phone")
    assert_clean(visit)


async def test_a_failed_event_replayed_from_its_page_ends_done(visit: Visit, fresh: Service) -> None:
    event_id = await _contact_done(fresh, "browser-replay-1", 71001)
    await sql(fresh, "UPDATE events SET status = 'failed', last_error = 'Moodle refused the call: invalidparameter' "
              "WHERE id = :id", id=event_id)  # fmt: skip
    await sign_in(visit, "alice")
    await visit.goto("/console/events?status=failed")
    await visit.page.click(f"a[href='/console/events/{event_id}']")
    assert await visit.page.locator("#event-status").inner_text() == "failed"
    await visit.page.click("#replay")
    await visit.page.get_by_role("status").filter(has_text="queued again").wait_for()
    await eventually(lambda: _is(fresh, event_id, "done"), what="the replayed event done")
    await visit.page.reload()
    assert await visit.page.locator("#event-status").inner_text() == "done"
    assert await visit.page.locator(".timeline li").count() == 2  # the first run, and the replay's
    publish_screenshot(await visit.snap("event"), "event")
    audit = await sql(fresh, "SELECT actor, target FROM audit WHERE action = 'replay'")
    assert [tuple(a) for a in audit] == [("alice", f"event:{event_id}")]
    assert_clean(visit)


async def _is(service: Service, event_id: int, status: str) -> bool:
    return await event_status(service, event_id) == status


async def test_a_needs_review_event_resolved_with_a_note_is_in_the_audit_under_the_operator(
    visit: Visit, fresh: Service
) -> None:
    event_id = await _contact_done(fresh, "browser-review-1", 71002)
    await sql(fresh, "UPDATE events SET status = 'needs_review', last_error = 'outcome unknown' WHERE id = :id",
              id=event_id)  # fmt: skip
    await sign_in(visit, "alice")
    await visit.goto(f"/console/events/{event_id}")
    await visit.page.fill("#resolve-note", "checked in Moodle: the account is right")
    await visit.page.click("#resolve")
    await visit.page.get_by_role("status").filter(has_text="resolved").wait_for()
    assert await event_status(fresh, event_id) == "done"
    await visit.goto("/console/audit?actor=alice")
    row = visit.page.locator("tbody tr", has_text="resolve")
    assert "checked in Moodle: the account is right" in await row.inner_text()
    assert f"event:{event_id}" in await row.inner_text()
    publish_screenshot(await visit.snap("audit"), "audit")
    assert_clean(visit)


async def test_a_form_without_its_csrf_token_is_refused(visit: Visit, fresh: Service) -> None:
    event_id = await _contact_done(fresh, "browser-csrf-1", 71003)
    await sql(fresh, "UPDATE events SET status = 'failed' WHERE id = :id", id=event_id)
    await sign_in(visit, "alice")
    request = visit.page.context.request  # the browser's cookies, no token
    for form in ({}, {"csrf": "not-the-token"}):
        answer = await request.post(f"{visit.base_url}/console/events/{event_id}/replay", form=form, max_redirects=0)
        assert answer.status == 403
        assert "security token" in await answer.text()
    assert await event_status(fresh, event_id) == "failed"
    assert await sql(fresh, "SELECT count(*) FROM audit WHERE action = 'replay'") == [(0,)]
    assert_clean(visit)


async def test_a_viewer_sees_but_cannot_replay(visit: Visit, fresh: Service) -> None:
    event_id = await _contact_done(fresh, "browser-viewer-1", 71004)
    await sql(fresh, "UPDATE events SET status = 'failed' WHERE id = :id", id=event_id)
    await sign_in(visit, "victor")
    await visit.goto(f"/console/events/{event_id}")
    assert await visit.page.locator("#event-status").inner_text() == "failed"
    assert await visit.page.locator("#replay").count() == 0  # no button to press
    # Nor does the request itself pass, with the viewer's own valid token.
    token = await visit.page.locator(".who input[name=csrf]").input_value()
    answer = await visit.page.context.request.post(
        f"{visit.base_url}/console/events/{event_id}/replay", form={"csrf": token}, max_redirects=0
    )
    assert answer.status == 403
    assert "viewer" in await answer.text()
    assert await event_status(fresh, event_id) == "failed"
    assert_clean(visit)


async def test_a_dry_run_started_from_the_page_shows_its_progress_and_plan(visit: Visit, fresh: Service) -> None:
    fresh.coursesales.add_category(700, "Browser Category", moodle_category_id="1")
    fresh.coursesales.add_course_date(9700, "2026-12-20", "2026-12-20", 700)
    await sign_in(visit, "alice")
    await visit.goto("/console/runs")
    await visit.page.click("#start-dry-run")
    await visit.page.wait_for_url("**/console/runs/*")
    await visit.page.locator("#run-bar").wait_for()
    await visit.page.locator("#run-status", has_text="done").wait_for(timeout=30_000)
    value = await visit.page.locator("#run-bar").get_attribute("value")
    assert value == await visit.page.locator("#run-bar").get_attribute("max")
    plan = visit.page.locator(".plan-group")
    assert await plan.count() >= 1
    assert "course" in (await plan.first.inner_text()).lower()
    publish_screenshot(await visit.snap("reconcile"), "reconcile")
    assert_clean(visit)


async def _search_placeholder_is_read_whole(visit: Visit) -> None:
    """The events search's placeholder ("1234, jane@example.com, D-100") is read whole, not cut at its input's edge."""
    room, text = await visit.page.evaluate(
        """() => {
            const input = document.querySelector('input[name=q]'), style = getComputedStyle(input);
            const pen = document.createElement('canvas').getContext('2d');
            pen.font = style.font;
            const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            return [room, pen.measureText(input.placeholder).width];
        }"""
    )
    assert text <= room, f"the search's placeholder needs {text:.0f} px, its input has {room:.0f}"


async def test_every_page_answers_under_the_policy(visit: Visit, fresh: Service) -> None:
    await sign_in(visit, "alice")
    for path, shot in [("/console/links", "links"), ("/console/settings", "settings"), ("/console/attention", None),
                       ("/console/events", "events"), ("/console/runs", None)]:  # fmt: skip
        response = await visit.goto(path)
        assert response is not None and response.status == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        if path == "/console/events":
            await _search_placeholder_is_read_whole(visit)  # at a desktop's width too
        if shot:
            publish_screenshot(await visit.snap(shot), shot)
    assert_clean(visit)


async def test_a_needs_attention_group_is_replayed_once_its_category_is_mapped(visit: Visit, fresh: Service) -> None:
    fresh.coursesales.add_category(800, "Welding")  # no Moodle category yet
    fresh.coursesales.add_course_date(9800, "2026-12-21", "2026-12-21", 800)
    for n in range(2):
        body = coursesales_example("registration.registered") | {"id": f"browser-weld-{n}"}
        body["registration"].update(document_external_id=f"D-W{n}", course_date_id=9800)
        body["registration"]["contact"] |= {"contact_id": 72000 + n, "username": f"welder{n}@example.com",
                                            "email": f"welder{n}@example.com"}  # fmt: skip
        await deliver(fresh, body)

    async def all_finished() -> bool:
        rows = await sql(fresh, "SELECT status FROM events")
        return bool(rows) and all(r[0] in ("done", "failed") for r in rows)

    await eventually(all_finished, what="the registrations' events finished")
    failed = {r[0] for r in await sql(fresh, "SELECT id FROM events WHERE status = 'failed'")}
    assert failed, "an unmapped category fails its course and its registrations"
    await sign_in(visit, "alice")
    await visit.goto("/console/attention")
    group = visit.page.locator("#group-category-unmapped\\:800")
    assert "800" in await group.locator("h2").inner_text()
    assert f"{len(failed)} event" in await group.locator("h2").inner_text()
    assert "Moodle Category Id" in await group.inner_text()  # the fix, in the CourseSales administrator's words
    publish_screenshot(await visit.snap("attention"), "attention")

    fresh.coursesales.add_category(800, "Welding", moodle_category_id="1")  # the administrator maps it
    visit.page.once("dialog", lambda dialog: dialog.accept())  # the confirmation says how many
    await group.get_by_role("button").click()
    await visit.page.get_by_role("status").filter(has_text=f"{len(failed)} events replayed").wait_for()

    async def replayed_done() -> bool:
        rows = await sql(fresh, "SELECT status FROM events WHERE id = ANY(:ids)", ids=list(failed))
        return all(r[0] == "done" for r in rows)

    await eventually(replayed_done, what="the group's events done once the category is mapped")
    await visit.goto("/console/attention")
    assert await visit.page.locator("#group-category-unmapped\\:800").count() == 0
    actors = await sql(fresh, "SELECT DISTINCT actor FROM audit WHERE action = 'replay'")
    assert actors == [("alice",)]
    assert_clean(visit)


async def test_a_bulk_replay_by_the_filter_says_how_many_first(visit: Visit, fresh: Service) -> None:
    ids = [await _contact_done(fresh, f"browser-bulk-{n}", 73000 + n) for n in range(3)]
    await sql(fresh, "UPDATE events SET status = 'failed' WHERE id = ANY(:ids)", ids=ids)
    await sign_in(visit, "alice")
    await visit.goto("/console/events?status=failed")
    asked: list[str] = []

    async def refuse_then_accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await (dialog.dismiss() if len(asked) == 1 else dialog.accept())

    visit.page.on("dialog", refuse_then_accept)
    await visit.page.click("#bulk-replay")  # refused: nothing happens
    assert asked == ["Replay 3 failed events?"]
    assert {await event_status(fresh, i) for i in ids} == {"failed"}
    await visit.page.click("#bulk-replay")
    await visit.page.get_by_role("status").filter(has_text="3 events replayed").wait_for()
    for event_id in ids:
        await eventually(partial(_is, fresh, event_id, "done"), what=f"event {event_id} done")
    assert_clean(visit)


async def test_diagnose_names_the_next_step_after_the_page_has_loaded(visit: Visit, fresh: Service) -> None:
    fresh.coursesales.add_category(810, "Rigging")  # no Moodle category
    fresh.coursesales.add_course_date(9810, "2026-12-22", "2026-12-22", 810)
    body = coursesales_example("registration.registered") | {"id": "browser-rig-1"}
    body["registration"].update(document_external_id="D-R1", course_date_id=9810)
    body["registration"]["contact"] |= {"contact_id": 74000, "username": "rigger@example.com",
                                        "email": "rigger@example.com"}  # fmt: skip
    await deliver(fresh, body)

    async def finished() -> bool:
        rows = await sql(fresh, "SELECT status FROM events")
        return bool(rows) and all(r[0] in ("done", "failed") for r in rows)

    await eventually(finished, what="the registration's events finished")
    await sign_in(visit, "victor")  # a viewer may ask: the walk only reads
    await visit.goto("/console/diagnose?contact=74000&course_date=9810")
    step = visit.page.locator("#next-step")
    await step.wait_for(timeout=20_000)
    assert "810" in await step.inner_text() and "Moodle Category Id" in await step.inner_text()
    assert await visit.page.locator("#link-category-mapped .badge").inner_text() == "fail"
    assert any("/console/diagnose/walk?" in url for url in visit.requests)  # loaded after the page
    publish_screenshot(await visit.snap("diagnose"), "diagnose")
    assert_clean(visit)


async def test_the_round_trip_check_runs_from_the_overview_and_shows_its_result(visit: Visit, fresh: Service) -> None:
    fresh.coursesales.add_category(820, "Round trip", moodle_category_id="1")  # a mapped category for its course
    await sign_in(visit, "alice")
    await visit.page.locator("#round-trip").get_by_text("Not run yet").wait_for()
    visit.page.once("dialog", lambda dialog: dialog.accept())
    await visit.page.click("#run-round-trip")
    await visit.page.get_by_role("status").filter(has_text="Round-trip check").wait_for(timeout=60_000)
    result = visit.page.locator("#round-trip-result")
    await result.wait_for()
    assert "passed" in await result.inner_text(), await visit.page.locator("#round-trip").inner_text()
    assert "Moodle 4.3" in await result.inner_text()
    kept = await sql(fresh, "SELECT status FROM runs WHERE kind = 'round_trip'")
    assert kept == [("done",)]
    assert await sql(fresh, "SELECT actor FROM audit WHERE action = 'check.round_trip'") == [("alice",)]
    assert_clean(visit)
