"""How a console page is answered: a Jinja2 template with what every page shows (who is signed in, the pause
banner, the last action's message), and the redirect after a form that changed something (post/redirect/get).

The message of the last action travels in a short-lived cookie: it is our own text, and the templates escape it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.api import control
from app.api.deps import RUNTIME
from app.api.tenant_routing import CONSOLE_ROOT
from app.console.auth import PATH, Signed

HERE = Path(__file__).parent
STATIC = "/console/static"
FLASH = "csms_flash"


def _base(request: Request) -> dict[str, Any]:
    """Where the console's links start: "" for the default tenant's, /t/{slug} for a registered tenant's; and a
    registered tenant's console names its tenant on every page (an administrator of several opens several)."""
    base = request.scope.get(CONSOLE_ROOT, "")
    rt = request.scope.get(RUNTIME) if base else None
    tenant = {"name": rt.name or rt.slug, "slug": rt.slug} if rt is not None else None
    return {"base": base, "tenant": tenant}


templates = Jinja2Templates(directory=HERE / "templates", context_processors=[_base])


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def _age(seconds: float | None) -> str:
    """An age a person reads at a glance: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


templates.env.filters.update(when=_when, iso=_iso, age=_age, quote=lambda v: quote(str(v), safe=""))
templates.env.globals.update(static=STATIC)


async def page(
    request: Request, session: AsyncSession, template: str, user: Signed, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """A full console page: the template with the operator, the pause banner and the last action's message."""
    flash = request.cookies.get(FLASH)
    kind, _, text = (flash or "").partition(":")
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "pause": await control.pause_state(session), "flash": text, "flash_kind": kind, **context},
        status_code=status,
    )
    if flash:
        response.delete_cookie(FLASH, path=PATH)
    return response


def fragment(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A part of a page that htmx loads or swaps in (a health tile, a run's progress)."""
    return templates.TemplateResponse(request, template, context, status_code=status)


def done(to: str, message: str, *, ok: bool = True) -> Response:
    """After a change: back to a page (303, so a reload does not post again), with the message it shows once."""
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(FLASH, f"{'ok' if ok else 'error'}:{message}"[:400], max_age=60, path=PATH, httponly=True,
                        samesite="strict")  # fmt: skip
    return response
