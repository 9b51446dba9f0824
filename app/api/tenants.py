"""The tenant registry over HTTP, for the hub administrator alone (SYNC_HUB__TOKEN; the ops tokens are refused).

Secrets go in and never come out: an answer lists which ones are set. Every refusal names its field (422 bad
input, 409 a slug or credential in use, 404 no such tenant), never a secret's value; a body FastAPI itself refuses
is answered without echoing what was sent (the secrets are in it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import MAX_OFFSET, RuntimeDep, SessionDep, tokens_equal
from app.api.unit_of_work import UnitOfWorkDep
from app.db.tenants import DEFAULT_SLUG
from app.settings import Settings, secret
from app.sync import tenants as rules
from app.sync.tenant_views import default_view, tenant_view

HUB_PATH = "/api/tenants"
ACTOR = "hub"  # who the audit trail names for the hub token

hub_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="HubToken",
    description="`Authorization: Bearer <SYNC_HUB__TOKEN>`: the tenant registry (/api/tenants); on the rest of /api "
    "it acts on the tenant named by `?tenant=SLUG`",
)


def is_hub_token(given: Any, settings: Settings) -> bool:
    """Whether this is the hub's token (an unset one matches nothing); the guard lets it through to the registry."""
    return tokens_equal(given, secret(settings.hub.token))


async def require_hub(
    rt: RuntimeDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(hub_bearer)]
) -> None:
    """The registry's one check: the hub token, and no other (an ops token acts on one tenant, not on the list)."""
    if not is_hub_token(creds.credentials if creds else None, rt.settings):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the hub bearer token (SYNC_HUB__TOKEN) is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


class _NoEcho(APIRoute):
    """FastAPI's own 422 repeats the input it refused: here a secret could be in it. Answered with where and why."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                lines = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
                raise HTTPException(422, "; ".join(lines)) from None

        return route


class Refusal(BaseModel):
    detail: str = Field(description="one line per problem, joined by '; ', each naming its field; never a secret")


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong hub bearer token (SYNC_HUB__TOKEN); the ops tokens are not enough"},
    400: {"description": "malformed request (e.g. NUL characters)"},
    422: {"model": Refusal, "description": "bad input: one line per problem, each naming its field"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such tenant"}}
IN_USE: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Refusal,
        "description": "the slug, or a credential, is already in use (by another tenant or the file configuration)",
    }
}
FILE_TENANT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Refusal,
        "description": "the tenant `default` is the file/environment configuration: change it there",
    }
}
router = APIRouter(
    prefix=HUB_PATH,
    tags=["tenants"],
    dependencies=[Depends(require_hub)],
    responses=RESPONSES,
    route_class=_NoEcho,
)
SlugPath = Annotated[str, Path(max_length=64, description="the tenant's slug")]

EXAMPLE_CONFIG: dict[str, Any] = {"moodle": {"url": "https://moodle.acme.example"}, "coursesales": {"url": "https://acme.coursesales.com", "username": "SoapSoap"}, "courses": {"timezone": "Australia/Brisbane"}}  # fmt: skip
EXAMPLE_SECRETS: dict[str, Any] = {"MOODLE__TOKEN": "<the Moodle web-services token>", "COURSESALES__PASSWORD": "<the login's password>", "WEBHOOKS__COURSESALES_TOKEN": "<a token of 16 characters or more>", "COMPAT__WSTOKEN": "<another one>", "API__TOKEN": "<another one>"}  # fmt: skip
EXAMPLE_URLS: dict[str, Any] = {"coursesales_webhook": "https://sync.example.org/t/acme/webhooks/coursesales", "moodle_webhook": "https://sync.example.org/t/acme/webhooks/moodle", "compat": "https://sync.example.org/t/acme/webservice/rest/server.php"}  # fmt: skip

EXAMPLE_OUT: dict[str, Any] = {
    "slug": "acme", "name": "Acme Training", "enabled": True, "source": "registry", "config": EXAMPLE_CONFIG,
    "secrets": sorted(EXAMPLE_SECRETS), "urls": EXAMPLE_URLS,
    "created_at": "2026-12-06T10:00:00Z", "updated_at": "2026-12-06T10:00:00Z",
}  # fmt: skip


class TenantIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"slug": "acme", "name": "Acme Training", "config": EXAMPLE_CONFIG, "secrets": EXAMPLE_SECRETS}
            ]
        },
    )

    slug: str = Field(description="1 to 40 characters of a-z 0-9 -, not `default`; in its URLs: /t/{slug}/...")
    name: str = Field(description="a display name")
    config: dict[str, Any] = Field(default_factory=dict, description="sections and keys exactly as in sync.toml")
    secrets: dict[str, Any] = Field(
        default_factory=dict, description="by environment name without SYNC_ (MOODLE__TOKEN, API__TOKEN...)"
    )


class TenantPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"config": {"moodle": {"url": "https://lms.acme.example"}}, "secrets": {"API__READ_TOKEN": None}}
            ]
        },
    )

    name: str | None = None
    config: dict[str, Any] | None = Field(None, description="merged key by key; a null removes a key or section")
    secrets: dict[str, Any] | None = Field(None, description="merged; a null removes that secret")


class TenantOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_OUT]})

    slug: str
    name: str
    enabled: bool
    source: str = Field(description="`registry`; `file` for the tenant `default`, the file/environment configuration")
    config: dict[str, Any] | None = Field(description="what the tenant sets (null for `default`: GET /api/settings)")
    secrets: list[str] = Field(description="the names of the secrets set; their values are never shown")
    urls: dict[str, str] = Field(description="its inbound URLs, under hub.public_url")
    created_at: datetime | None
    updated_at: datetime | None


class TenantList(BaseModel):
    items: list[TenantOut]
    total: int


class Deleted(BaseModel):
    deleted: str


def _out(rt: RuntimeDep, tenant: Any) -> TenantOut:
    return TenantOut.model_validate(tenant_view(tenant, rt.settings.hub.public_url))


def _not_the_file(slug: str) -> None:
    if slug == DEFAULT_SLUG:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the tenant {DEFAULT_SLUG} is the file/environment "
                            "configuration: change it there")  # fmt: skip


@router.get("", response_model=TenantList, summary="The tenants: `default` (the file configuration) first")
async def list_tenants(
    rt: RuntimeDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> TenantList:
    first = [TenantOut.model_validate(default_view(rt.settings))] if offset == 0 else []
    rows, total = await rules.list_tenants(session, offset=max(offset - 1, 0), limit=limit - len(first))
    return TenantList(items=first + [_out(rt, t) for t in rows], total=total + 1)


@router.post("", response_model=TenantOut, status_code=201, summary="Register a tenant", responses=IN_USE)
async def add_tenant(body: TenantIn, rt: RuntimeDep, uow: UnitOfWorkDep) -> TenantOut:
    """Validated as its Settings; its secrets encrypted at rest, its credentials its own."""
    tenant = await rules.add(uow.session, rt.vault, rt.settings, slug=body.slug, name=body.name,
                             config=body.config, secrets=body.secrets, actor=ACTOR)  # fmt: skip
    return _out(rt, tenant)


@router.get("/{slug}", response_model=TenantOut, summary="One tenant", responses=NOT_FOUND)
async def show_tenant(slug: SlugPath, rt: RuntimeDep, session: SessionDep) -> TenantOut:
    if slug == DEFAULT_SLUG:
        return TenantOut.model_validate(default_view(rt.settings))
    return _out(rt, await rules.get_tenant(session, slug))


@router.patch(
    "/{slug}",
    response_model=TenantOut,
    summary="Change a tenant",
    responses={
        **NOT_FOUND,
        409: {
            "model": Refusal,
            "description": "a credential already in use, or the tenant `default` (change the file configuration instead)",
        },
    },
)
async def update_tenant(slug: SlugPath, body: TenantPatch, rt: RuntimeDep, uow: UnitOfWorkDep) -> TenantOut:
    """Merges the given name, sections, keys and secrets; a null removes a key, a section or a secret."""
    _not_the_file(slug)
    tenant = await rules.update(uow.session, rt.vault, rt.settings, slug, name=body.name, config=body.config,
                                secrets=body.secrets, actor=ACTOR)  # fmt: skip
    return _out(rt, tenant)


@router.post("/{slug}/disable", response_model=TenantOut, summary="Disable a tenant", responses={**NOT_FOUND, **FILE_TENANT})  # fmt: skip
async def disable_tenant(slug: SlugPath, rt: RuntimeDep, uow: UnitOfWorkDep) -> TenantOut:
    """Its deliveries are refused and nothing is processed for it until it is enabled again."""
    _not_the_file(slug)
    return _out(rt, await rules.set_enabled(uow.session, slug, enabled=False, actor=ACTOR))


@router.post("/{slug}/enable", response_model=TenantOut, summary="Enable a tenant", responses={**NOT_FOUND, **FILE_TENANT})  # fmt: skip
async def enable_tenant(slug: SlugPath, rt: RuntimeDep, uow: UnitOfWorkDep) -> TenantOut:
    _not_the_file(slug)
    return _out(rt, await rules.set_enabled(uow.session, slug, enabled=True, actor=ACTOR))


@router.delete("/{slug}", response_model=Deleted, summary="Delete a tenant and its data", responses={**NOT_FOUND, **FILE_TENANT})  # fmt: skip
async def delete_tenant(
    slug: SlugPath,
    uow: UnitOfWorkDep,
    confirm: Annotated[str | None, Query(max_length=64, description="the slug again")] = None,
) -> Deleted:
    """Irreversible: `?confirm=<slug>` says which tenant the caller means to lose (422 without it)."""
    _not_the_file(slug)
    await rules.remove(uow.session, slug, confirm=confirm, actor=ACTOR)
    return Deleted(deleted=slug)
