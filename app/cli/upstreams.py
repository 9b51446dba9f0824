"""Moodle and CourseSales from the command line: `check` their configuration, `probe` their state now."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from app.cli.startup import console, load_settings, migrated_settings
from app.cli.tenancy import tenant_option
from app.settings import Settings


def check(
    tenant: str | None = typer.Option(None, "--tenant", help="a registered tenant's slug: check its upstreams"),
    round_trip: bool = typer.Option(
        False,
        "--round-trip",
        help="also do every kind of call the sync makes, on the check's own scratch user and courses in Moodle "
        "(made once, reused, left suspended and hidden, never deleted), and read CourseSales; exit 0 only if all pass",
    ),
) -> None:
    """Check the Moodle token (functions, hidden names) and the CourseSales login (categories, fields)."""
    from app.cli.tenants import tenant_settings_of

    registered = tenant not in (None, "default")
    settings = tenant_settings_of(migrated_settings(), str(tenant)) if registered else load_settings()
    if not settings.moodle.configured:
        where = (
            f"tenant {tenant}'s moodle.url and MOODLE__TOKEN"
            if registered
            else "SYNC_MOODLE__URL and SYNC_MOODLE__TOKEN"
        )
        console.print(f"[red]Moodle is not configured[/red]: set {where}", highlight=False)
        raise typer.Exit(1)
    slug = str(tenant) if registered else "default"
    passed = asyncio.run(_check(settings, tenant=slug))
    if round_trip:
        passed = asyncio.run(_round_trip(migrated_settings(), slug)) and passed
    raise typer.Exit(0 if passed else 1)


def probe(tenant: str = tenant_option()) -> None:
    """Probe Moodle and CourseSales now and show each one's state; one that answers again has its work resumed."""
    raise typer.Exit(asyncio.run(_probe(migrated_settings(), tenant)))


async def _check(settings: Settings, *, tenant: str = "default") -> bool:
    from app.checks import Finding, check_coursesales, check_moodle
    from app.runtime import build_runtime

    rt = build_runtime(settings)
    try:
        findings = await check_moodle(rt.moodle)
        if settings.coursesales.configured:
            findings += await check_coursesales(rt.coursesales, settings.courses)
        else:
            findings.append(
                Finding("warn", "CourseSales is not configured (SYNC_COURSESALES__URL, __USERNAME, __PASSWORD)")
            )
        findings += await _held_upstreams(rt, tenant)
    finally:
        await rt.close()
    colours = {"ok": "green", "warn": "yellow", "error": "red"}
    for f in findings:
        console.print(f"[{colours[f.level]}]{f.level:5}[/] {f.message}")
    return not any(f.level == "error" for f in findings)


async def _held_upstreams(rt: Any, tenant: str = "default") -> list[Any]:
    """What the running service last recorded of each upstream of the tenant: work it holds for one that cannot be
    used."""
    from app.checks import Finding
    from app.cli.tenancy import tenant_id_of
    from app.db.engine import make_session_factory
    from app.sync import upstreams

    try:
        async with make_session_factory(rt.engine, await tenant_id_of(rt.engine, tenant))() as s:
            states = upstreams.report(rt.settings, await upstreams.load(s))
    except Exception:  # no database yet (a check before the first migrate): nothing recorded
        return []
    return [
        Finding("warn", f"the service holds the work for {name}: {st['state']} since {st['since']}: {st['reason']}")
        for name, st in states.items()
        if st["state"] in (upstreams.UNAVAILABLE, upstreams.AUTH_FAILED)
    ]


async def _probe(settings: Settings, tenant: str) -> int:
    from app.cli.tenancy import tenant_runtime
    from app.jobs.probe import probe_all
    from app.jobs.queue import Queue, connect
    from app.jobs.redis import redis_settings

    async with tenant_runtime(settings, tenant) as rt:
        (rt.home or rt).queue = rt.queue = Queue(connect(redis_settings(settings)))
        report = await probe_all(rt, "cli", force=True)
    for name, state in report.items():
        line = f"{name}: {state['state']}" + (
            f" since {state['since']}: {state['reason']}" if "reason" in state else ""
        )
        console.print(line, highlight=False)
        if state.get("fix"):
            console.print(f"  fix: {state['fix']}", highlight=False)
    return 0 if all(s["state"] in ("ok", "not_configured") for s in report.values()) else 1


LABELS = {"ok": "ok", "warn": "warn", "skipped": "skipped", "assumed": "assumed", "failed": "FAILED",
          "blocked": "not run"}  # fmt: skip


async def _round_trip(settings: Settings, tenant: str) -> bool:
    """The round-trip check (app/sync/round_trip.py), one line per step on stdout; True when every step passed."""
    from app.cli.startup import out
    from app.cli.tenancy import tenant_runtime
    from app.sync.round_trip import run_round_trip

    async with tenant_runtime(settings, tenant) as rt:
        report = await run_round_trip(rt)
    release = f"Moodle {report.moodle_release}, version {report.moodle_version}" if report.moodle_release else ""
    out.print(f"round trip: {release or 'Moodle did not say its release'}", highlight=False, markup=False)
    if report.refused:
        out.print(f"not started: {report.refused}", highlight=False, markup=False)
    for s in report.steps:
        took = f"{s.seconds:6.2f}s" if s.status != "blocked" else f"{'-':>7}"
        out.print(f"{LABELS[s.status]:8} {s.name:30} {took}  {s.summary}", highlight=False, markup=False)
        for label, text in (("means:", s.meaning), ("fix:", s.fix)):
            if text:
                out.print(f"{'':9}{label:7}{text}", highlight=False, markup=False)
    counts = ", ".join(f"{n} {LABELS[status]}" for status, n in report.counts().items())
    out.print(f"{counts or 'no step ran'}: exit {report.exit_code}", highlight=False, markup=False)
    return report.ok
