"""Signing in and out of the console. Every sign-in, sign-out and wrong password is in the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import RuntimeDep
from app.console import throttle
from app.console.auth import (
    SIGN_IN_COOKIE,
    SignedDep,
    end_session,
    set_sign_in_cookie,
    sign_in_token,
    start_session,
    tokens_match,
)
from app.console.render import done, templates
from app.db.accounts import NAME_MAX
from app.runtime import Runtime
from app.sync import operators
from app.sync.operations import audit

router = APIRouter(prefix="/console", include_in_schema=False)

Text = Annotated[str, Form(max_length=operators.MAX_PASSWORD_CHARS)]


def _next(value: str | None) -> str:
    """Where to go once signed in: a console page of this site, nothing else (no open redirect)."""
    if value and value.startswith("/console") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console"


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _form(
    request: Request, rt: Runtime, *, status: int = 200, error: str = "", name: str = "", then: str | None = None
) -> HTMLResponse:
    token, cookie = sign_in_token(request, rt)
    then = _next(then if then is not None else request.query_params.get("next"))
    response = templates.TemplateResponse(
        request, "sign_in.html", {"csrf": token, "error": error, "name": name, "next": then}, status_code=status
    )
    if cookie:
        set_sign_in_cookie(request, response, cookie)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request, rt: RuntimeDep) -> HTMLResponse:
    return _form(request, rt)


@router.post("/sign-in", response_model=None)
async def sign_in(
    request: Request, rt: RuntimeDep, name: Text = "", password: Text = "", csrf: Text = "", next: Text = ""
) -> Response:
    token, fresh = sign_in_token(request, rt)
    if fresh is not None or not tokens_match(csrf, token):
        return _form(request, rt, status=403, error="This form had expired: please sign in again.", name=name,
                     then=next)  # fmt: skip
    shown = name.strip().lower()[:NAME_MAX]
    address = _address(request)
    wait = await throttle.wait_seconds(rt, shown, address)
    if wait:
        response = _form(request, rt, status=429, name=name, then=next,
                         error=f"Too many wrong passwords: try again in {wait} seconds.")  # fmt: skip
        response.headers["Retry-After"] = str(wait)
        return response
    async with rt.sessions() as session:
        operator = await operators.verify(session, name, password)
        if operator is None:
            audit(session, actor="console", action="console.sign_in_failed", target=f"operator:{shown}",
                  note=f"from {address}")  # fmt: skip
            await session.commit()
            await throttle.failed(rt, shown, address)
            return _form(request, rt, status=401, error="Wrong name or password.", name=name, then=next)
        audit(session, actor=operator.name, action="console.sign_in", note=f"from {address}")
        await session.commit()
    signed = RedirectResponse(_next(next), status_code=303)
    start_session(request, signed, rt, operator)
    signed.delete_cookie(SIGN_IN_COOKIE, path="/console")
    return signed


@router.post("/sign-out", response_model=None)
async def sign_out(request: Request, rt: RuntimeDep, user: SignedDep) -> Response:
    # Signing out changes nothing but the session, so a viewer may too; the CSRF token is still required.
    form = await request.form()
    if not tokens_match(form.get("csrf") or request.headers.get("x-csrf-token"), user.csrf):
        return done("/console", "This form had expired: reload the page and try again.", ok=False)
    async with rt.sessions() as session:
        audit(session, actor=user.name, action="console.sign_out")
        await session.commit()
    response = RedirectResponse("/console/sign-in", status_code=303)
    end_session(response)
    return response
