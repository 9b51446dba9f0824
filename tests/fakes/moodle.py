"""A stateful in-memory Moodle that answers like the recordings in tests/fixtures/moodle (4.3 and 5.0 lines).

Usage::

    fake = MoodleFake("4.3")                      # or "5.0"; token "test-token"
    transport = httpx.ASGITransport(app=fake)     # the fake itself is the ASGI callable (fake.app is the same)
    async with httpx.AsyncClient(transport=transport, base_url="http://moodle.test") as http:
        client = MoodleClient(http, url="http://moodle.test", token=fake.token)

Only ``/webservice/rest/server.php`` is served (POST or GET); parameters may come in the query string or the
form body, in PHP array notation. Errors are HTTP 200 bodies like Moodle's, in JSON with
``moodlewsrestformat=json`` and in XML otherwise.

Test helpers: ``users``/``courses``/``categories``/``enrolments``/``completions`` (the site's tables, writable),
``functions`` (the external service's function list; ``remove_function``/``add_function``), ``calls`` (every call
as ``(wsfunction, params)``), ``mark_self_completed``/``mark_complete`` (completion), ``fail_next`` (faults) and
``latency``/``item_latency`` (seconds per call / per batch item).

Site states an admin can cause, each checked against a recording (tests/test_moodle_outages_contract.py):

- ``delete_user(uid)``: Moodle's delete_user() (core_user_delete_users or an admin). The user stays in ``users``,
  renamed ``<email>.<timestamp>``, email the md5 of its old username, flagged ``deleted`` (never answered). By id it
  is still returned (150); by its old username or email it is not found (151, 152); enrolling it is refused (153:
  ``coding_exception``/``codingerror`` on 4.3, ``userdeleted`` on 5.0); updating it answers a
  ``usernotupdateddeleted`` warning (154); its enrolments are gone (155).
- ``suspend_token_user(on=True)``: suspends the token's own user (``users[token_userid]["suspended"]``): every call
  with the right token answers ``wsaccessusersuspended`` (HTTP 200, 156) until ``suspend_token_user(False)``.
- ``maintenance(on=True)``: CLI maintenance mode: every request answers HTTP 503 with ``Retry-After: 300`` and the
  maintenance HTML page as ``text/html`` (157) until ``maintenance(False)``; then calls answer normally (158).
- ``remove_function(name)``: takes a function out of the token's external service: calling it then answers
  ``webservice_access_exception``/``accessexception`` (004), as a real function outside the service does.
- ``refuse_capability(name)``: takes a capability from the token's role (``CAPABILITIES``): the calls that need it
  answer ``required_capability_exception``/``nopermissions`` naming it as Moodle names it, or ``cannotviewreport``
  for ``report/completion:view``. Not recorded (no recording refuses a capability): taken from Moodle's source.

Flags: ``debug`` (adds ``debuginfo``; on 5.0 also table-specific dml error codes), ``viewfullnames`` (4.3 only:
user objects gain firstname/lastname; 5.0 always returns them), ``viewuseridentity`` (off: user objects lose
``email`` and email lookups find nothing, recording 043).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx

from tests.fakes.moodle_functions import missing_record
from tests.fakes.moodle_protocol import (
    MoodleException,
    clean_username,
    exception_class,
    invalid_param,
    moodle_error,
    parse_php_form,
    strip_omitted,
    to_native,
    validate,
    xml_error,
    xml_response,
)
from tests.fakes.moodle_registry import HANDLERS, KNOWN_FUNCTIONS, param_descriptions
from tests.fakes.moodle_state import SiteState, listed_course, now, user_details

REST_PATH = "/webservice/rest/server.php"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# The external service of the recorded sites, in site_info order. 4.3's 001 was recorded before
# core_enrol_get_users_courses was added to the service (README); append it to call that function on "4.3".
SERVICE_FUNCTIONS = [
    "core_webservice_get_site_info",
    "core_user_create_users",
    "core_user_update_users",
    "core_user_get_users_by_field",
    "core_course_create_courses",
    "core_course_update_courses",
    "core_course_get_courses_by_field",
    "core_course_duplicate_course",
    "core_course_get_categories",
    "core_course_create_categories",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
    "core_enrol_get_enrolled_users",
    "core_completion_get_course_completion_status",
]
USERS_COURSES = "core_enrol_get_users_courses"
# The capabilities each function checks with require_capability(), and the name get_capability_string() gives each
# (lang/en/role.php, enrol/manual/lang/en/enrol_manual.php): Moodle's message names that, not the capability.
# No recording refuses a capability; this follows Moodle's source (course/externallib.php, user/externallib.php,
# enrol/manual/externallib.php). duplicate_course checks its three after the template, the category and the
# options, and before the short name (so a taken short name still proves them); the others at their start.
CAPABILITIES: dict[str, tuple[tuple[str, str], ...]] = {
    "core_user_create_users": (("moodle/user:create", "Create users"),),
    "core_user_update_users": (("moodle/user:update", "Update user profiles"),),
    "core_course_create_courses": (("moodle/course:create", "Create courses"),),
    "core_course_duplicate_course": (
        ("moodle/course:create", "Create courses"),
        ("moodle/restore:restorecourse", "Restore courses"),
        ("moodle/backup:backupcourse", "Backup courses"),
    ),
    "enrol_manual_enrol_users": (("enrol/manual:enrol", "Enrol users"),),
    "enrol_manual_unenrol_users": (("enrol/manual:unenrol", "Unenrol users from the course"),),
}
# completion_can_view_data() for another user's completion: a plain moodle_exception, not a capability exception.
COMPLETION_REPORT = "report/completion:view"
FAULT_KINDS = frozenset({"500", "503", "timeout", "nonjson"})
MAINTENANCE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Maintenance</title></head><body>"
    '<div class="box">This site is undergoing maintenance and is currently not available</div></body></html>\n'
)
# admin/cli/maintenance.php --enable writes this page; lib/setup.php serves it to every request (157, both lines:
# only the site name differs). The recorded content type is "text/html", without a charset.
CLI_MAINTENANCE_STATUS, CLI_MAINTENANCE_RETRY_AFTER, CLI_MAINTENANCE_CONTENT_TYPE = 503, "300", "text/html"
CLI_MAINTENANCE_PAGE = """<!DOCTYPE html>
<html  lang="en" xml:lang="en">
    <head>
        <meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
                <title>@SITENAME@ under maintenance</title>
        <style>
body {
    margin: 0;
    font-family: -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif,\
"Apple Color Emoji","Segoe UI Emoji","Segoe UI Symbol","Noto Color Emoji";
    font-size: .9375rem;
    font-weight: 400;
    line-height: 1.5;
    color: #343a40;
    text-align: left;
    background-color: #f2f2f2;
}
#page {
    margin-top: 15px;
    background: white;
    max-width: 600px;
    margin: 0 auto;
    padding: 15px;
}
#region-main {
    margin: 0 auto;
    border: 1px solid rgba(0,0,0,.125);
    padding: 1rem 1.25rem 1.25rem;
    background-color: #fff;
}
h1 {
    font-size: 2.34rem;
    margin: 0 0 .5rem;
    font-weight: 300;
    line-height: 1.2;
}
.alert-danger {
    color: #6e211e;
    background-color: #f6d9d8;
    border-color: #f3c9c8;
    padding: .75rem 1.25rem;
}
    </style>
    </head>
    <body>
        <div id="page">
            <div id="region-main">
                <h1>@SITENAME@ under maintenance</h1>
                <div class='alert-danger'>The site is undergoing maintenance and is currently not available</div>\
                            </div>
        </div>
    </body>
</html>

"""
PHP_FATAL_PAGE = (
    "<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted in "
    "<b>/var/www/moodle/lib/dml/moodle_database.php</b> on line <b>1234</b><br />\n"
)


class MoodleFake:
    """In-memory Moodle REST endpoint; the instance is an ASGI application."""

    def __init__(
        self,
        version: str = "4.3",
        token: str = "test-token",  # noqa: S107 - a fake's token, not a secret
        *,
        debug: bool = False,
        viewfullnames: bool = False,
        viewuseridentity: bool = True,
        site_url: str | None = None,
    ) -> None:
        if version not in ("4.3", "5.0"):
            raise ValueError(f"unsupported Moodle line {version!r}: use '4.3' or '5.0'")
        self.version = version
        self.token = token
        self.debug = debug
        self.viewfullnames = viewfullnames
        self.viewuseridentity = viewuseridentity
        # The recorded sites' URLs, so that site_info answers match the recordings.
        self.site_url = site_url or ("http://127.0.0.1:8401" if self.is_v5 else "http://127.0.0.1:8400")
        self.sitename = "Moodle Contract Test Site"
        self.token_userid = 3
        self.token_is_siteadmin = False  # what core_webservice_get_site_info says of the token's user
        self.functions: list[str] = SERVICE_FUNCTIONS + ([USERS_COURSES] if self.is_v5 else [])
        self.state = SiteState(showactivitydates=self.is_v5)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.latency = 0.0
        self.item_latency = 0.0
        self._faults: list[tuple[str, float | None, int]] = []
        self.in_maintenance = False  # see maintenance()
        self.refused_capabilities: set[str] = set()  # see refuse_capability()

    # -- identity -------------------------------------------------------------------------------------------------

    @property
    def is_v5(self) -> bool:
        return self.version.startswith("5")

    @property
    def release(self) -> str:
        return "5.0.6+ (Build: 20260403)" if self.is_v5 else "4.3 (Build: 20231009)"

    @property
    def site_version(self) -> str:
        return "2025041406.11" if self.is_v5 else "2023100900"

    def function_version(self, function: str) -> str:
        if self.is_v5 and function.startswith("enrol_manual_"):
            return "2025041400"  # the plugin's own version on 5.0
        return self.site_version

    @property
    def app(self) -> MoodleFake:
        """The ASGI callable (the fake itself), for ``httpx.ASGITransport(app=fake.app)``."""
        return self

    # -- tables (views of self.state, assignable) -----------------------------------------------------------------

    @property
    def users(self) -> dict[int, dict[str, Any]]:
        return self.state.users

    @users.setter
    def users(self, value: dict[int, dict[str, Any]]) -> None:
        self.state.users = value

    @property
    def courses(self) -> dict[int, dict[str, Any]]:
        return self.state.courses

    @courses.setter
    def courses(self, value: dict[int, dict[str, Any]]) -> None:
        self.state.courses = value

    @property
    def categories(self) -> dict[int, dict[str, Any]]:
        return self.state.categories

    @categories.setter
    def categories(self, value: dict[int, dict[str, Any]]) -> None:
        self.state.categories = value

    @property
    def enrolments(self) -> dict[tuple[int, int], dict[str, Any]]:
        """(userid, courseid) -> {"status": 0 active / 1 suspended, "timestart", "timeend", "roles": [...]}."""
        return self.state.enrolments

    @enrolments.setter
    def enrolments(self, value: dict[tuple[int, int], dict[str, Any]]) -> None:
        self.state.enrolments = value

    @property
    def completions(self) -> dict[tuple[int, int], dict[str, Any]]:
        return self.state.completions

    # -- test helpers ---------------------------------------------------------------------------------------------

    def mark_self_completed(self, userid: int, courseid: int, when: int | None = None) -> None:
        """The learner ticks self completion: the criterion is done, the course is not yet (cron has not run, 124)."""
        row = self.state.completions.setdefault((userid, courseid), {"criteria": {}, "timecompleted": None})
        for ctype in self.state.courses[courseid]["criteria"] or [1]:
            row["criteria"].setdefault(ctype, when or now())

    def mark_complete(self, userid: int, courseid: int, when: int | None = None) -> None:
        """Criteria done and aggregated by cron: completion status and get_users_courses report completed (125)."""
        self.mark_self_completed(userid, courseid, when)
        row = self.state.completions[(userid, courseid)]
        row["timecompleted"] = row["timecompleted"] or when or now()

    def delete_user(self, userid: int) -> None:
        """Delete an account as lib/moodlelib.php delete_user() does (core_user_delete_users, an admin's delete).

        The row stays, flagged ``deleted`` (internal: answers never show it); ``username`` becomes
        ``<email>.<timestamp>`` (the email cleaned as a username: lower case, only ``[-.@_a-z0-9]``; the next free
        timestamp if taken), ``email`` the md5 hex of the OLD username (150: 32 hex chars), ``idnumber`` is cleared;
        ``suspended`` and the other fields are left as they were. Its enrolments (and with them its roles) are
        removed (155). Deleting a deleted user changes nothing. What the site then answers: see the module docstring.
        """
        user = self.state.users[userid]
        if user["deleted"]:
            return
        deltime = now()
        email = user["email"] or f"{user['username']}.{user['id']}@unknownemail.invalid"
        stem = clean_username(email)[: 100 - (len(str(deltime)) + 1)]
        taken = {u["username"] for u in self.state.users.values()}
        stamp = deltime
        while f"{stem}.{stamp}" in taken:  # Moodle's "$delname++" for bulk deletes of users with the same email
            stamp += 1
        old_username = user["username"]
        user.update(
            deleted=True,
            username=f"{stem}.{stamp}",
            email=hashlib.md5(old_username.encode()).hexdigest(),  # noqa: S324 - Moodle's own choice
            idnumber="",
            timemodified=deltime,
        )
        for key in [k for k in self.state.enrolments if k[0] == userid]:
            del self.state.enrolments[key]

    def suspend_token_user(self, on: bool = True) -> None:
        """Suspend (or, with ``on=False``, unsuspend) the token's own user, as an admin does (156).

        Sets ``users[token_userid]["suspended"]``. While it is set, every call with the right token answers HTTP 200
        ``moodle_exception``/``wsaccessusersuspended`` "Refused web service access for suspended username:
        <its username>" (webservice::authenticate_user(): after the token check, before the function is looked at).
        A wrong token still answers ``invalidtoken``.
        """
        self.state.users[self.token_userid]["suspended"] = on

    def maintenance(self, on: bool = True) -> None:
        """Switch CLI maintenance mode (``admin/cli/maintenance.php --enable``) on or off (157, 158).

        While on, every HTTP request (any path, any method, before the token is looked at) answers HTTP 503 with
        ``Retry-After: 300``, content type ``text/html`` and the maintenance page naming ``sitename``; nothing is
        applied, queued ``fail_next`` faults stay queued, and web-service calls are still logged in ``calls``.
        Once off, calls answer normally at once (158). ASGI only: ``handle()`` has no HTTP status to give.
        """
        self.in_maintenance = on

    def remove_function(self, name: str) -> None:
        """Take ``name`` out of the token's external service (ValueError if it is not in it).

        A call to it then answers ``webservice_access_exception``/``accessexception`` "Access control exception"
        (004), as for any real Moodle function outside the service; site info no longer lists it.
        """
        if name not in self.functions:
            raise ValueError(f"{name} is not in the external service: {self.functions}")
        self.functions.remove(name)

    def add_function(self, name: str) -> None:
        """Add ``name`` to the token's external service (no-op if it is there), e.g. USERS_COURSES on 4.3."""
        if name not in self.functions:
            self.functions.append(name)

    def refuse_capability(self, capability: str, refused: bool = True) -> None:
        """Take ``capability`` from the token's role (``refused=False`` gives it back); see ``CAPABILITIES``.

        A call that needs it answers ``required_capability_exception`` (``core\\exception\\...`` on 5.0) with
        errorcode ``nopermissions`` and "Sorry, but you do not currently have permissions to do that (<its name>)."
        (no ``debuginfo``); ``report/completion:view`` makes completion status answer ``cannotviewreport``.
        """
        known = {c for caps in CAPABILITIES.values() for c, _ in caps} | {COMPLETION_REPORT}
        if capability not in known:
            raise ValueError(f"{capability} is not a capability the fake checks: {sorted(known)}")
        (self.refused_capabilities.add if refused else self.refused_capabilities.discard)(capability)

    def _check_capabilities(self, function: str, params: dict[str, Any]) -> None:
        """require_capability() of the function, where Moodle calls it (see CAPABILITIES)."""
        if function == "core_completion_get_course_completion_status":
            if COMPLETION_REPORT in self.refused_capabilities and params["courseid"] in self.state.courses:
                raise moodle_error("cannotviewreport", "You cannot view this report")
            return
        if function == "core_course_duplicate_course" and (
            params["courseid"] not in self.state.courses or params["categoryid"] not in self.state.categories
        ):
            return  # Moodle answers the missing template or category first (083)
        for capability, name in CAPABILITIES.get(function, ()):
            if capability in self.refused_capabilities:
                cls = "required_capability_exception"
                raise MoodleException(
                    "core\\exception\\" + cls if self.is_v5 else cls,
                    "nopermissions",
                    f"Sorry, but you do not currently have permissions to do that ({name}).",
                )

    def fail_next(self, n: int = 1, kind: str = "503", *, delay: float | None = None, retry_after: int = 30) -> None:
        """Make the next ``n`` calls fail.

        ``"500"``: HTTP 500 HTML page. ``"503"``: HTTP 503 maintenance page with ``Retry-After: retry_after``.
        ``"timeout"``: wait ``delay`` seconds (if given) then raise ``httpx.ReadTimeout`` into the client (an
        ASGITransport enforces no timeouts itself). ``"nonjson"``: HTTP 200 with a PHP fatal-error page.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(FAULT_KINDS)}")
        self._faults.extend([(kind, delay, retry_after)] * n)

    def user_details(self, user: dict[str, Any], *, admin_fields: bool = False, courseid: int | None = None) -> dict:
        return user_details(
            self.state,
            user,
            site_url=self.site_url,
            show_names=self.viewfullnames or self.is_v5,
            show_email=self.viewuseridentity,
            admin_fields=admin_fields,
            trackforums=self.is_v5,
            courseid=courseid,
        )

    def listed_course(self, userid: int, courseid: int) -> bool:
        return listed_course(self.state, userid, courseid)

    # -- the web-service call -------------------------------------------------------------------------------------

    def handle(self, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> tuple[str, str]:
        """Answer one REST call; returns (content type, body). Also usable without ASGI."""
        as_json, token, function, merged = self._parse_call(query, form)
        try:
            answer = self._run(token, function, merged)
        except MoodleException as exc:
            return self._error(exc, as_json)
        if as_json:
            return "application/json", json.dumps(strip_omitted(answer))
        return "application/xml; charset=utf-8", xml_response(answer)

    def _parse_call(self, query: list[tuple[str, str]], form: list[tuple[str, str]]) -> tuple[bool, Any, Any, dict]:
        """Split the request into (json?, wstoken, wsfunction, parameters) and log the call."""
        # array_merge($_GET, $_POST): top-level keys, the body wins.
        merged = {**parse_php_form(query), **parse_php_form(form)}
        as_json = merged.pop("moodlewsrestformat", "xml") == "json"
        token = merged.pop("wstoken", None)
        function = merged.pop("wsfunction", None)
        self.calls.append((function if isinstance(function, str) else "", to_native(merged)))
        return as_json, token, function, merged

    def _run(self, token: Any, function: Any, params: dict[str, Any]) -> Any:
        if not token or token != self.token:
            raise moodle_error("invalidtoken", "Invalid token - token not found")
        token_user = self.state.users.get(self.token_userid)
        if token_user is not None and token_user["suspended"]:  # suspend_token_user() (156)
            raise moodle_error(
                "wsaccessusersuspended", f"Refused web service access for suspended username: {token_user['username']}"
            )
        if not function:
            raise invalid_param("Missing function name")
        if not isinstance(function, str) or function not in KNOWN_FUNCTIONS:
            sql = "SELECT * FROM {external_functions} WHERE name = ?"
            raise missing_record(self, "external_functions", sql, str(function))
        if function not in self.functions or function not in HANDLERS:
            raise MoodleException(
                "webservice_access_exception",
                "accessexception",
                "Access control exception",
                f"Access to the function {function}() is not allowed. There could be multiple reasons for this: "
                "1. The service linked to the user token does not contain the function.",
            )
        validated = validate(param_descriptions(self)[function], params)
        self._check_capabilities(function, validated)
        return HANDLERS[function](self, validated)

    def _error(self, exc: MoodleException, as_json: bool) -> tuple[str, str]:
        debuginfo = exc.debuginfo if self.debug else None
        cls = exception_class(exc.exception, self.version)
        if not as_json:
            return "application/xml; charset=utf-8", xml_error(cls, exc.errorcode, exc.message, debuginfo)
        body: dict[str, Any] = {"exception": cls, "errorcode": exc.errorcode, "message": exc.message}
        if debuginfo is not None:
            body["debuginfo"] = debuginfo
        return "application/json", json.dumps(body)

    # -- ASGI -----------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if self.in_maintenance:  # lib/setup.php answers before any script runs (157)
            if scope["path"] == REST_PATH:
                self._parse_call(*self._request_items(scope, body))
            page = CLI_MAINTENANCE_PAGE.replace("@SITENAME@", html.escape(self.sitename, quote=False))
            headers = [(b"retry-after", CLI_MAINTENANCE_RETRY_AFTER.encode())]
            await _respond(send, CLI_MAINTENANCE_STATUS, CLI_MAINTENANCE_CONTENT_TYPE, page, headers)
            return
        if scope["path"] != REST_PATH or scope["method"] not in ("GET", "POST"):
            await _respond(send, 404, "text/html; charset=utf-8", "<h1>Not Found</h1>")
            return
        query, form = self._request_items(scope, body)
        if self._faults:  # a failed call is logged but not applied
            self._parse_call(query, form)
            await self._fault(send, *self._faults.pop(0))
            return
        content_type, text = self.handle(query, form)
        await asyncio.sleep(self._cost(form or query))
        await _respond(send, 200, content_type, text)

    @staticmethod
    def _request_items(scope: Scope, body: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(query string pairs, form body pairs) of one HTTP request."""
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if scope["method"] == "POST" else []
        return query, form

    def _cost(self, items: list[tuple[str, str]]) -> float:
        # Per-item cost: count distinct batch indexes (users[0][...], users[1][...] -> 2).
        indexes = {name.split("]", 1)[0] for name, _ in items if "[" in name}
        return self.latency + self.item_latency * len(indexes)

    async def _fault(self, send: Send, kind: str, delay: float | None, retry_after: int) -> None:
        if kind == "timeout":
            if delay:
                await asyncio.sleep(delay)
            raise httpx.ReadTimeout("Moodle fake: injected timeout")
        if kind == "503":
            headers = [(b"retry-after", str(retry_after).encode())]
            await _respond(send, 503, "text/html; charset=utf-8", MAINTENANCE_PAGE, headers)
        elif kind == "500":
            await _respond(send, 500, "text/html; charset=utf-8", "<h1>500 Internal Server Error</h1>")
        else:
            await _respond(send, 200, "application/json", PHP_FATAL_PAGE)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, content_type: str, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    all_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers + (headers or [])})
    await send({"type": "http.response.body", "body": body})
