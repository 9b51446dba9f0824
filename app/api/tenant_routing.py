"""Which tenant a request is for, decided once, by the request guard, before any route runs.

- ``/t/{slug}/webhooks/coursesales``, ``/t/{slug}/webhooks/moodle``, ``/t/{slug}/webservice/rest/server.php``: the
  tenant of the slug (the path is then served as the classic one, with that tenant's runtime, so its own tokens
  and secrets are the ones checked: one tenant's credential never authenticates on another's URL);
- the classic ``/webservice/rest/server.php``: the tenant whose ``COMPAT__WSTOKEN`` the request carries (a CourseSales
  export map is configured with a host and a token only), found by keyed hash; else ``default``;
- ``/api/...``: the tenant whose ``API__TOKEN`` or ``API__READ_TOKEN`` is the bearer token, found by keyed hash; the
  hub token with ``?tenant=SLUG`` acts on that tenant; the file's ops tokens on ``default``;
- everything else (the classic webhooks, the console, health, metrics, docs): ``default``.

The runtime is left in the request's scope (``RUNTIME``), where ``app.api.deps.get_runtime`` takes it.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import structlog

from app.api.deps import ACCESS, ACTOR, RUNTIME, token_access
from app.api.tenants import is_hub_token
from app.runtime import Runtime

log = structlog.get_logger(__name__)

CONSOLE_ROOT = "sync.console_root"  # scope key: the prefix of a tenant's console (/t/{slug})
DISABLED = "sync.tenant_disabled"  # scope key: the request is for a disabled tenant (the compat endpoint says so)

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
CONSOLE_PATH = re.compile(r"^/t/(?P<slug>[a-z0-9][a-z0-9-]{0,39})/console(?:/.*)?$")
TENANT_PATH = re.compile(
    r"^/t/(?P<slug>[a-z0-9][a-z0-9-]{0,39})(?P<rest>/webhooks/(?:coursesales|moodle)|/webservice/rest/server\.php)$"
)
COMPAT_PATH = "/webservice/rest/server.php"
API_NAMES = {"API__TOKEN": "full", "API__READ_TOKEN": "read"}


@dataclass
class Refusal:
    status: int
    detail: str
    headers: dict[str, str] | None = None


def tenant_path(path: str) -> tuple[str, str] | None:
    """(slug, classic path) of a tenant's own URL."""
    found = TENANT_PATH.match(path)
    return (found["slug"], found["rest"]) if found else None


async def for_tenant_path(home: Runtime, scope: dict[str, Any], slug: str, rest: str) -> Refusal | None:
    """Serve ``/t/{slug}{rest}`` as ``rest`` for the slug's tenant."""
    try:
        rt, known = await home.hub.by_slug(slug)
    except Exception as exc:  # the database does not answer: nothing could be stored either; the sender retries
        return _unreadable(exc)
    compat = rest == COMPAT_PATH
    if rt is None and not (known and compat):
        return Refusal(403, f"tenant {slug} is disabled") if known else Refusal(404, "Not Found")
    scope["path"], scope["raw_path"] = rest, rest.encode()
    if rt is None:  # the compat endpoint answers a disabled tenant as Moodle would (HTTP 200, an error)
        scope[DISABLED], scope[RUNTIME] = True, home
        return None
    scope[RUNTIME] = rt
    return await _admit(home, rt)


async def for_tenant_console(home: Runtime, scope: dict[str, Any], slug: str) -> Refusal | None:
    """``/t/{slug}/console/...``: the tenant's own console, its operators and its data. The prefix becomes the
    request's root path (pages link under it; ``console_send`` puts it on redirects and cookies)."""
    try:
        rt, known = await home.hub.by_slug(slug)
    except Exception as exc:
        return _unreadable(exc)
    if rt is None:
        return Refusal(403, f"tenant {slug} is disabled") if known else Refusal(404, "Not Found")
    scope["root_path"] = scope[CONSOLE_ROOT] = f"/t/{slug}"
    scope[RUNTIME] = rt
    return None


def route_path(scope: MutableMapping[str, Any]) -> str:
    """The path the routes see: a tenant console's prefix (its root path) taken off."""
    path: str = scope["path"]
    root: str = scope.get(CONSOLE_ROOT, "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def console_send(send: Any, root: str) -> Any:
    """The tenant console's answers, their redirects and cookies under its prefix: the pages' own code speaks of
    /console alone, as the default tenant's console does."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [_under(root, k, v) for k, v in message.get("headers", [])]}
        await send(message)

    return sending


def _under(root: str, name: bytes, value: bytes) -> tuple[bytes, bytes]:
    prefix = root.encode()
    if name.lower() in (b"location", b"hx-redirect") and value.startswith(b"/console"):
        return name, prefix + value
    if name.lower() == b"set-cookie":
        return name, value.replace(b"Path=/console", b"Path=" + prefix + b"/console")
    return name, value


async def for_compat(home: Runtime, scope: dict[str, Any], body: bytes) -> Refusal | None:
    """The classic compat URL: the tenant whose wstoken this is (in the query or the form), else ``default``."""
    token = _wstoken(scope.get("query_string") or b"") or _wstoken(body)
    if not token:
        return None
    try:
        rt, name = await home.hub.by_credential(token, {"COMPAT__WSTOKEN"})
    except Exception as exc:  # the database does not answer: the default tenant's endpoint says what it can
        log.warning("routing.registry_unreadable", error=type(exc).__name__)
        return None
    if rt is not None:
        scope[RUNTIME] = rt
        return await _admit(home, rt)
    if name is not None:
        scope[DISABLED] = True
    return None


async def _admit(home: Runtime, rt: Runtime) -> Refusal | None:
    """Fair intake (app.intake_limit): a registered tenant past its deliveries a second waits; default never does.
    The bucket is the deployment's, in the queue's Redis."""
    if rt.tenant_id == home.tenant_id:
        return None
    per_second = home.settings.hub.intake_per_second
    redis = home.queue.redis if home.queue is not None else None
    wait = await home.hub.intake.admit(rt.tenant_id, per_second, redis)
    if not wait:
        return None
    log.info("intake.limited", tenant=rt.slug, per_second=per_second)
    return Refusal(
        429,
        f"tenant {rt.slug} is sending more than {per_second} deliveries a second: send again",
        {"retry-after": str(wait)},
    )


async def for_api(home: Runtime, scope: dict[str, Any], token: str | None, hub_path: bool) -> Refusal | None:
    """``/api/...``: the tenant of the bearer token, and how far it reaches; a Refusal for anything else."""
    settings = home.settings
    if hub_path:  # the registry: the hub token alone
        return None if is_hub_token(token, settings) else _unauthorized("hub (SYNC_HUB__TOKEN)")
    access: Literal["full", "read"] | None = token_access(token, settings)
    if access is not None:
        scope[RUNTIME], scope[ACCESS] = home, access
        return None
    if is_hub_token(token, settings):
        slug = dict(parse_qsl((scope.get("query_string") or b"").decode("latin-1"))).get("tenant")
        if not slug:
            return Refusal(400, "the hub token acts on one tenant: add ?tenant=SLUG")
        if not SLUG.fullmatch(slug):
            return Refusal(404, "no such tenant")
        try:
            rt, known = await home.hub.by_slug(slug)
        except Exception as exc:
            return _unreadable(exc)
        if rt is None:
            return Refusal(403, f"tenant {slug} is disabled") if known else Refusal(404, f"no tenant {slug}")
        scope[RUNTIME], scope[ACCESS], scope[ACTOR] = rt, "full", "hub"
        return None
    if token:
        try:
            rt, name = await home.hub.by_credential(token, API_NAMES)
        except Exception as exc:  # the database does not answer: the token cannot be a tenant's that we know of
            log.warning("routing.registry_unreadable", error=type(exc).__name__)
            return _unauthorized("ops")
        if rt is not None and name is not None:
            scope[RUNTIME], scope[ACCESS] = rt, API_NAMES[name]
            return None
        if name is not None:
            return Refusal(403, "this tenant is disabled")
    return _unauthorized("ops")


CLASSIC_PATHS = ("/webhooks/coursesales", "/webhooks/moodle", COMPAT_PATH)


def document_tenant_paths(paths: dict[str, Any]) -> None:
    """Add each tenant URL to the OpenAPI document's paths: the classic operation, with the slug before it."""
    slug = {
        "name": "slug",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"},
        "description": "a registered tenant's slug (`default`: the file's configuration)",
    }
    for classic in CLASSIC_PATHS:
        operations = {}
        for method, op in paths.get(classic, {}).items():
            operations[method] = {
                **op,
                "operationId": f"{op.get('operationId', method)}_of_tenant",
                "summary": f"{op.get('summary', '')} (one tenant's URL)",
                "description": f"{op.get('description', '')}\n\nThe same as `{classic}`, for the tenant of the slug: "
                "its own credentials are the ones checked. An unknown slug is answered 404, a disabled tenant 403 "
                "(the Moodle-compatible endpoint: HTTP 200 with Moodle's `invalidtoken` error).",
                "parameters": [slug, *op.get("parameters", [])],
            }
        paths["/t/{slug}" + classic] = operations


def _unreadable(exc: Exception) -> Refusal:
    log.warning("routing.registry_unreadable", error=type(exc).__name__)
    return Refusal(503, "the tenant registry cannot be read now: try again", {"retry-after": "5"})


def _unauthorized(which: str) -> Refusal:
    return Refusal(401, f"a valid {which} bearer token is required", {"www-authenticate": "Bearer"})


def _wstoken(raw: bytes) -> str | None:
    if b"wstoken" not in raw:
        return None
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    return next((value for key, value in pairs if key == "wstoken"), None)
