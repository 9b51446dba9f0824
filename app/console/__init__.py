"""The operators' web console at /console: server-rendered pages (Jinja2, htmx) over the same operations as /api.

Every view and action here calls the function of its documented /api endpoint (app.api), with the signed-in
operator's name in the audit trail instead of "api". Its scripts, styles and chart library are files of this
package (static/vendor/VENDORED.md): nothing loads from another origin.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.api.tenant_routing import route_path
from app.console import (
    pages_admin,
    pages_attention,
    pages_diagnose,
    pages_events,
    pages_links,
    pages_overview,
    pages_runs,
    signin,
)
from app.console.auth import Refused, SignInRequired
from app.console.render import HERE, STATIC, templates


async def _sign_in_first(request: Request, _exc: Exception) -> Response:
    # The page's own path (a tenant console's prefix is put back on the redirect by app.api.tenant_routing).
    target = route_path(request.scope) + (f"?{request.url.query}" if request.url.query else "")
    location = "/console/sign-in" + (f"?next={quote(target, safe='/')}" if request.method == "GET" else "")
    if request.headers.get("hx-request"):  # a part of a page: htmx takes the whole page there
        return Response(status_code=401, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


async def _refused(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, Refused)
    return templates.TemplateResponse(
        request, "refused.html", {"status": exc.status, "message": exc.message}, status_code=exc.status
    )


def install(app: FastAPI) -> None:
    for module in (
        signin,
        pages_overview,
        pages_events,
        pages_attention,
        pages_diagnose,
        pages_links,
        pages_runs,
        pages_admin,
    ):
        app.include_router(module.router)
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.add_exception_handler(Refused, _refused)
