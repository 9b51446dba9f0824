"""create_app(): the FastAPI application and its lifespan (database, Moodle client, queue)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.routing import Route

from app import console, heap
from app.api import (
    attention,
    checks,
    compat,
    contacts,
    control,
    diagnose,
    docs,
    health,
    moodle_webhook,
    ops,
    overview,
    round_trip,
    runs,
    settings_view,
    tenants,
    upstreams,
    webhooks,
)
from app.api.guard import RequestGuard
from app.api.security_headers import SecurityHeaders
from app.api.tenant_routing import document_tenant_paths
from app.crypto import VaultLocked
from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings
from app.runtime import Runtime, open_runtime
from app.settings import Settings, get_settings
from app.sync import operations

SECURITY_SCHEMES = {
    "CourseSalesToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <SYNC_WEBHOOKS__COURSESALES_TOKEN>`",
    },
    "StandardWebhooks": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": "Standard Webhooks: webhook-id, webhook-timestamp and webhook-signature (v1 HMAC-SHA256 "
        "with the whsec_ secret), timestamps within `webhooks.tolerance_seconds` of now (default 300), either way.",
    },
    "MoodleToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <SYNC_WEBHOOKS__MOODLE_TOKEN>`, or the same value in the body's "
        "`token` field (local_webhooks)",
    },
    "MoodleWsToken": {
        "type": "apiKey",
        "in": "query",
        "name": "wstoken",
        "description": "The token this service issued to the export map (`SYNC_COMPAT__WSTOKEN`), in the query "
        "string or the form body, as Moodle takes it.",
    },
}


async def _keys_not_open(_request: Request, exc: Exception) -> JSONResponse:
    """A delivery while the database has not answered since start: refused as a database down is, to be sent again."""
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _operation_refused(_request: Request, exc: operations.OperationError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


# The documented routers, in the order their routes are matched.
ROUTERS = (
    webhooks,
    moodle_webhook,
    compat,
    overview,  # before ops: /api/events/per-hour is not an event id
    ops,
    control,
    attention,
    contacts,
    diagnose,
    upstreams,
    checks,
    round_trip,  # /api/check (one check, run or kept); /api/checks are the console's tiles
    runs,
    settings_view,
    tenants,
    health,
    docs,
)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The document, made once: the routes', the security schemes, each tenant URL beside its classic one."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        document_tenant_paths(schema["paths"])
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The app; pass ``runtime`` to share one (tests, `serve`), else it is built at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        s = settings or get_settings()
        rt = await open_runtime(s)
        rt.queue = Queue(connect(redis_settings(s)))
        app.state.runtime = rt
        heap.settle()
        try:
            yield
        finally:
            await rt.close()

    app = FastAPI(
        title="coursesales-moodle-sync",
        version="0.1.0",
        summary="Keeps a CourseSales account and a Moodle site in step.",
        lifespan=lifespan,
        # Swagger UI from the package instead of a CDN (app/api/docs.py); ReDoc only loads from a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
    )
    for module in ROUTERS:
        app.include_router(module.router)
    app.mount(docs.STATIC_PREFIX, docs.static_files(), name="static")
    console.install(app)  # the operators' pages at /console, over the same endpoint functions
    # The hot path, served by a plain Starlette route in front of its documented FastAPI route: the same function
    # (it takes the Request and returns its Response), without FastAPI's per-request dependency solving and
    # wrapping (their cost: BENCHMARKS.md, "Measured design decisions"). The FastAPI route stays for the OpenAPI
    # document.
    app.router.routes.insert(0, Route("/webhooks/coursesales", webhooks.coursesales_webhook, methods=["POST"]))

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way to extend it

    def current_settings() -> Settings:
        rt = getattr(app.state, "runtime", None)
        return rt.settings if rt is not None else (settings or get_settings())

    app.add_middleware(RequestGuard, settings=current_settings, runtime=lambda: getattr(app.state, "runtime", None))
    # Outermost, so its headers are the last word on the pages it covers, the guard's refusals included.
    app.add_middleware(SecurityHeaders)
    # An operator action refused by its rules (unknown id, wrong state, a clashing link): its status and reason,
    # answered as an HTTPException would be, for every endpoint at once.
    # The decorator form, called directly: typed for a handler of this exception class, not of any Exception.
    app.exception_handler(operations.OperationError)(_operation_refused)
    app.exception_handler(VaultLocked)(_keys_not_open)
    return app
