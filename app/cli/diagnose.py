"""`diagnose`: why can this student not see this course? The chain of app.sync.diagnose, as a readable report.

Exit status: 0 all is well, 1 a link failed or could not be checked, 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from app.cli.startup import console, migrated_settings, out
from app.cli.tenancy import tenant_option
from app.settings import Settings

if TYPE_CHECKING:
    from app.sync.diagnose import Query

MARKS = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]????[/]"}
AREAS = {"coursesales": "CourseSales", "sync": "this service", "moodle": "Moodle"}


def diagnose(
    contact: str = typer.Argument(None, help="a contact id (1234), a username or an email"),
    course_date: int = typer.Option(None, "--course-date", min=1, max=2_147_483_647, help="a course date id"),
    document: str = typer.Option(None, "--document", help="a Document's external id (instead of --course-date)"),
    tenant: str = tenant_option(),
) -> None:
    """Why can this student not see this course? Walks CourseSales, this service and Moodle, and says the next step."""
    from app.sync.diagnose import BadQuery, Query

    try:
        query = Query(contact=contact, course_date=course_date, document=document).checked()
    except BadQuery as exc:
        console.print(f"[red]{_option(exc.field)}:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    raise typer.Exit(asyncio.run(_diagnose(migrated_settings(), query, tenant)))


def _option(field: str) -> str:
    return "CONTACT" if field == "contact" else "--" + field.replace("_", "-")


async def _diagnose(settings: Settings, query: Query, tenant: str) -> int:
    from app.cli.tenancy import tenant_runtime
    from app.sync.diagnose import walk

    async with tenant_runtime(settings, tenant) as rt:
        found = await walk(
            sessions=rt.sessions, moodle=rt.moodle, coursesales=rt.coursesales, settings=rt.settings, query=query
        )
    about = ", ".join(
        part
        for part in (
            found.contact,
            f"course date {found.course_date}" if found.course_date else "",
            f"Document {found.document}" if found.document else "",
        )
        if part
    )
    from rich.markup import escape  # upstream texts may hold brackets ("[errorcode]"): never markup

    out.print(f"[bold]diagnose {escape(about)}[/bold]", highlight=False)
    area = ""
    for link in found.links:
        if link.area != area:
            area = link.area
            out.print(f"\n[bold]{AREAS[area]}[/bold]", highlight=False)
        out.print(f"  {MARKS[link.ok]}  {link.name}: {escape(link.summary)}", highlight=False)
        if link.detail:
            out.print(f"        {escape(link.detail)}", highlight=False)
    verdict = "[green]all is well[/]" if found.ok else "[red]next step[/]"
    out.print(f"\n{verdict}: {escape(found.next_step)}", highlight=False)
    return 0 if found.ok else 1
