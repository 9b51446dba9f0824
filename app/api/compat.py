"""/webservice/rest/server.php: a stand-in for Moodle that CourseSales "Moodle" export maps can call unchanged.

It answers as Moodle would (HTTP 200, Moodle's error bodies, XML unless ``moodlewsrestformat=json``), but
instead of creating the users itself it queues them: the answer's ``id`` is the linked Moodle user id, or 0
while the user is still being made. ``X-Sync-Event-Id`` names the inbox events.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import col

from app.api.deps import RuntimeDep, SessionDep, read_body, tokens_equal
from app.api.tenant_routing import DISABLED
from app.db.models import Event, EventStatus, UserLink
from app.events.registry import EventKind, Source
from app.metrics import EVENTS_RECEIVED
from app.moodle import wire
from app.settings import secret
from app.sync.contacts import Contact, check_contact, password_failures
from app.sync.intake import compat_delivery

log = structlog.get_logger(__name__)
router = APIRouter(tags=["moodle-compatible"])

FUNCTIONS = frozenset({"core_user_create_users", "moodle_user_create_users"})
# core_user_create_users' parameter keys in Moodle's order (4.3/5.0): anything else is "Unexpected keys".
USER_KEYS = (
    "createpassword", "username", "auth", "password", "firstname", "lastname", "email", "maildisplay", "city",
    "country", "timezone", "description", "firstnamephonetic", "lastnamephonetic", "middlename", "alternatename",
    "interests", "idnumber", "institution", "department", "phone1", "phone2", "address", "lang", "calendartype",
    "theme", "mailformat", "customfields", "preferences",
)  # fmt: skip
# The keys Moodle describes as lists of structures; every other one is a single value.
LIST_KEYS = frozenset({"customfields", "preferences"})
REQUIRED = ("username", "firstname", "lastname", "email")


class MoodleFault(Exception):
    """An answer in Moodle's error shape."""

    def __init__(self, exception: str, errorcode: str, message: str, debuginfo: str | None = None) -> None:
        super().__init__(message)
        self.body: dict[str, Any] = {"exception": exception, "errorcode": errorcode, "message": message}
        if debuginfo:
            self.body["debuginfo"] = debuginfo


INVALID = "Invalid parameter value detected"


def _invalid(debuginfo: str) -> MoodleFault:
    return MoodleFault("invalid_parameter_exception", "invalidparameter", INVALID, debuginfo)


def _invalid_user(reason: str, key: str | None = None) -> MoodleFault:
    """Moodle's debuginfo for a bad ``users`` item: each structure level prefixes ``<key> => <message>: ``."""
    inner = f"{key} => {INVALID}: {reason}" if key else reason
    return _invalid(f"users => {INVALID}: {inner}")


_DOC: dict[str, Any] = {
    "summary": "Moodle-compatible user creation (CourseSales export maps)",
    "description": (
        "Form-encoded like Moodle's REST server: `wstoken` (= `SYNC_COMPAT__WSTOKEN`), `wsfunction` "
        "(`core_user_create_users` or the legacy `moodle_user_create_users`), `moodlewsrestformat=json` for JSON "
        "(XML otherwise), and `users[0][username]=...`. Always HTTP 200, as Moodle: a bad token is answered "
        '`{"exception":"moodle_exception","errorcode":"invalidtoken",...}`; a weak password with Moodle\'s own policy '
        'error. Success: `[{"id": <Moodle user id, or 0 while it is being made>, "username": ...}]`.'
    ),
    "openapi_extra": {
        "security": [{"MoodleWsToken": []}],
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                    "example": {
                        "wstoken": "<SYNC_COMPAT__WSTOKEN>",
                        "wsfunction": "moodle_user_create_users",
                        "moodlewsrestformat": "json",
                        "users[0][username]": "jane.doe@example.com",
                        "users[0][password]": "S3cret!pass",
                        "users[0][firstname]": "Jane",
                        "users[0][lastname]": "Doe",
                        "users[0][email]": "jane.doe@example.com",
                    },
                }
            }
        },
    },
    "responses": {
        200: {
            "description": "Moodle's answer: a list of {id, username}, or a Moodle error body (`invalidtoken` for a bad "
            "wstoken); JSON with moodlewsrestformat=json, else XML",
            "content": {"application/json": {}, "application/xml": {}},
        }
    },
}


async def moodle_rest(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    body = await read_body(request) if request.method == "POST" else b""
    items = parse_qsl(request.url.query, keep_blank_values=True)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # The token is checked before anything else is judged, as Moodle does.
    items += parse_qsl(text if text is not None else body.decode("utf-8", "replace"), keep_blank_values=True)
    form = wire.decode_form(items)
    if text is None and tokens_equal(form.get("wstoken"), secret(rt.settings.compat.wstoken)):
        return _answer(
            _invalid("the request body is not UTF-8").body, json_format=form.get("moodlewsrestformat") == "json"
        )
    json_format = form.get("moodlewsrestformat") == "json"
    if request.scope.get(DISABLED):  # a disabled tenant's token (app.api.tenant_routing): nothing is taken in
        fault = MoodleFault("moodle_exception", "invalidtoken", "Invalid token - token not found", "tenant disabled")
        return _answer(fault.body, json_format=json_format)
    try:
        result, event_ids = await _handle(rt, session, form)
    except MoodleFault as fault:
        return _answer(fault.body, json_format=json_format)
    resp = _answer(result, json_format=json_format)
    resp.headers["X-Sync-Event-Id"] = ",".join(str(i) for i in event_ids)
    return resp


for _method in ("POST", "GET"):
    router.add_api_route(
        "/webservice/rest/server.php",
        moodle_rest,
        methods=[_method],
        operation_id=f"moodle_rest_{_method.lower()}",
        **_DOC,
    )


def _answer(result: Any, *, json_format: bool) -> Response:
    is_error = isinstance(result, dict) and "exception" in result
    if json_format:
        return Response(json.dumps(result), media_type="application/json")
    text = wire.xml_error(result) if is_error else wire.xml_response(result)
    return Response(text, media_type="application/xml; charset=utf-8")


async def _handle(rt: RuntimeDep, session: SessionDep, form: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    if not tokens_equal(form.get("wstoken"), secret(rt.settings.compat.wstoken)):
        raise MoodleFault("moodle_exception", "invalidtoken", "Invalid token - token not found")
    function = form.get("wsfunction")
    if not function:
        raise _invalid("Missing function name")
    if not isinstance(function, str):
        raise _invalid("wsfunction: a function name is a string")
    if function not in FUNCTIONS:
        raise MoodleFault(
            "webservice_access_exception", "accessexception", "Access control exception",
            f"this endpoint only offers {', '.join(sorted(FUNCTIONS))}",
        )  # fmt: skip
    raw_users = form.get("users")
    if raw_users is None:
        raise _invalid("Missing required key in single structure: users")
    if not isinstance(raw_users, dict):
        raise _invalid_user(f"Only arrays accepted. The bad value is: '{raw_users}'")
    # PHP keeps every key and Moodle reads the list's values in order: numeric keys by number, then the others.
    pairs = [(_fields(raw_users[k]), k) for k in sorted(raw_users, key=_index_order)]
    contacts = [_contact(rt, fields) for fields, _ in pairs]
    deliveries = [compat_delivery(rt.vault, fields=f, contact=c) for (f, _), c in zip(pairs, contacts, strict=True)]
    if rt.queue is not None:
        for d in deliveries:
            d.status = EventStatus.queued  # the intake queues its job, or turns it back to accepted
    # Through the same group commit as the webhooks; gathered in order, so ids follow the users' order.
    stored = await asyncio.gather(*(rt.accept(d) for d in deliveries))
    known = await _results(session, [row.event_id for row in stored if not row.created])
    answer = []
    for row, contact in zip(stored, contacts, strict=True):
        moodle_id = await _linked_id(session, known.get(row.event_id), contact)
        answer.append({"id": moodle_id, "username": contact.moodle_username})
        EVENTS_RECEIVED.labels(
            Source.compat, EventKind.contact_upserted, "accepted" if row.created else "duplicate"
        ).inc()
        log.info("compat.user.accepted", event_id=row.event_id, duplicate=not row.created)
    return answer, [row.event_id for row in stored]


async def _results(session: SessionDep, event_ids: list[int]) -> dict[int, dict[str, Any] | None]:
    """The results of the events a repeat named (the user a finished one made)."""
    if not event_ids:
        return {}
    rows = await session.execute(select(col(Event.id), col(Event.result)).where(col(Event.id).in_(event_ids)))
    return {event_id: result for event_id, result in rows}


async def _linked_id(session: SessionDep, result: dict[str, Any] | None, contact: Contact) -> int:
    """The Moodle user id once the user exists, else 0 (the user is still being made)."""
    if result and result.get("moodle_user_id"):
        return int(result["moodle_user_id"])
    link = (
        await session.execute(select(UserLink).where(col(UserLink.username) == contact.moodle_username))
    ).scalar_one_or_none()
    return link.moodle_user_id if link else 0


def _index_order(key: str) -> tuple[int, int]:
    return (0, int(key)) if key.isascii() and key.isdigit() else (1, 0)


def _fields(raw: Any) -> dict[str, Any]:
    """One ``users`` item checked as Moodle's validate_parameters does: its keys in order, then unexpected keys."""
    if not isinstance(raw, dict):
        raise _invalid_user(f"Only arrays accepted. The bad value is: '{raw}'")
    for key in USER_KEYS:
        value = raw.get(key)
        if value is None:
            if key in REQUIRED:
                raise _invalid_user(f"Missing required key in single structure: {key}")
            continue
        if key in LIST_KEYS:
            if not isinstance(value, dict):
                raise _invalid_user(f"Only arrays accepted. The bad value is: '{value}'", key)
        elif not isinstance(value, str):
            raise _invalid_user("Scalar type expected, array or object received.", key)
        elif "\x00" in value:
            raise _invalid_user("NUL characters are not accepted", key)
    unexpected = [k for k in raw if k not in USER_KEYS]
    if unexpected:
        raise _invalid_user(f"Unexpected keys ({', '.join(unexpected)}) detected in parameter array.")
    missing = [k for k in REQUIRED if not raw[k].strip()]
    if missing:
        raise _invalid_user(f"Missing required key in single structure: {missing[0]}")
    return raw


def _contact(rt: RuntimeDep, fields: dict[str, Any]) -> Contact:
    """The export map's user as a contact, checked against Moodle's rules before anything is stored."""
    password = fields.get("password") or None
    if password is None:
        # Moodle would take createpassword=1, but the point of this service is the portal's own password.
        raise _invalid("Invalid password: a password is required (the Moodle login must match the student portal).")
    if password is not None:
        failed = password_failures(password, rt.settings.users)
        if failed:
            policy = "".join(f"<div>{f}</div>" for f in failed)
            raise MoodleFault("moodle_exception", policy, f"error/{policy}")
    try:
        contact = Contact(
            username=str(fields["username"]),
            firstname=str(fields["firstname"]),
            lastname=str(fields["lastname"]),
            email=str(fields["email"]),
            password=password,
            phone=str(fields["phone1"]) if fields.get("phone1") else None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _invalid_user(first["msg"], ".".join(map(str, first["loc"]))) from None
    problems = [p for p in check_contact(contact, rt.settings.users) if p.field != "password"]
    if problems:
        raise _invalid_user(problems[0].message, problems[0].field)
    return contact
