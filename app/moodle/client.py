"""MoodleClient: typed calls over Moodle's REST protocol (4.3 and 5.0 lines)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from app.metrics import UPSTREAM_CALLS, UPSTREAM_ERRORS, errorcode_label
from app.moodle.errors import (
    MoodleAuthError,
    MoodleError,
    MoodlePermanentError,
    MoodleTransientError,
    error_from_body,
)
from app.moodle.wire import Form, encode_params, form_body
from app.upstream import NOT_SENT

REST_PATH = "/webservice/rest/server.php"
T = TypeVar("T")
Item = Mapping[str, Any]  # one user, course or enrolment of a batch call, as Moodle's function takes it


@dataclass(frozen=True)
class ItemResult(Generic[T]):
    """The outcome of one item of a batch call: a value or the error that refused it."""

    index: int
    value: T | None = None
    error: MoodleError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class MoodleClient:
    """One Moodle site reached with one token; every answer checked, every error typed."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        url: str,
        token: str,
        max_in_flight: int = 4,
        timeout: float = 30.0,
        max_batch: int = 100,
        max_input_vars: int = 4000,
        duplicate_timeout: float = 600.0,
    ) -> None:
        self._http = http
        self._endpoint = url.rstrip("/") + REST_PATH
        self._token = token
        self._gate = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout
        self.max_batch = max_batch
        # PHP's max_input_vars (5000 by default) silently truncates bigger forms; keep a margin.
        self.max_input_vars = max_input_vars
        self.duplicate_timeout = duplicate_timeout
        self._token_user_id: int | None = None
        self.url = url.rstrip("/")

    async def call(
        self, function: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Call ``function`` with nested ``params``; return the decoded answer or raise a MoodleError."""
        return await self.call_form(function, encode_params(params or {}), timeout=timeout)

    async def call_form(self, function: str, form: Sequence[tuple[str, str]], *, timeout: float | None = None) -> Any:
        """Send already-encoded form fields; the token and function name are added here."""
        data: Form = [("wstoken", self._token), ("wsfunction", function), *form]
        async with self._gate:
            UPSTREAM_CALLS.labels("moodle", function).inc()
            try:
                return self._decode(function, await self._post(data, timeout))
            except MoodleError as exc:
                code = exc.errorcode if exc.errorcode and not exc.errorcode.startswith("<") else type(exc).__name__
                UPSTREAM_ERRORS.labels("moodle", function, errorcode_label(code)).inc()
                raise

    async def _post(self, data: Form, timeout: float | None) -> httpx.Response:
        function = dict(data).get("wsfunction", "")
        try:
            return await self._http.post(
                self._endpoint,
                params={"moodlewsrestformat": "json"},
                content=form_body(data),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=timeout or self._timeout,
            )
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, NOT_SENT)
            raise MoodleTransientError(f"timed out: {type(exc).__name__}", function=function, maybe_sent=sent) from None
        except httpx.TransportError as exc:
            # Not one call's fault: the network to Moodle failed, so Moodle as a whole is unreachable for now.
            sent = not isinstance(exc, NOT_SENT)
            raise MoodleTransientError(
                f"network error: {type(exc).__name__}", function=function, maybe_sent=sent, unreachable=True
            ) from None

    @staticmethod
    def _decode(function: str, resp: httpx.Response) -> Any:
        status = resp.status_code
        if status == 403 and not resp.content.strip():
            raise MoodleAuthError("REST protocol is disabled on this Moodle (HTTP 403)", function=function, status=403)
        if status == 503 or status >= 500:
            retry_after = resp.headers.get("Retry-After")
            raise MoodleTransientError(
                f"Moodle answered HTTP {status}" + (" (maintenance)" if status == 503 else ""),
                function=function,
                status=status,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if status != 200:
            raise MoodlePermanentError(f"Moodle answered HTTP {status}", function=function, status=status)
        try:
            body = json.loads(resp.content) if resp.content.strip() else None
        except ValueError:
            raise MoodleTransientError(
                "Moodle answered with a body that is not JSON", function=function, status=status
            ) from None
        if isinstance(body, dict) and "exception" in body and "errorcode" in body:
            raise error_from_body(body, function=function)
        return body

    # -- batching ------------------------------------------------------------------------

    def batch_size(self, fields_per_item: int) -> int:
        """Items per call under both the batch setting and PHP's max_input_vars."""
        return max(1, min(self.max_batch, self.max_input_vars // max(1, fields_per_item)))

    async def batch(
        self, items: Sequence[Item], send: Callable[[list[Item]], Awaitable[list[T]]], *, fields_per_item: int = 10,
        isolate: bool = True,
    ) -> list[ItemResult[T]]:  # fmt: skip
        """Send all-or-nothing batches; when one is refused for its data, split it to isolate the bad item (or, not
        ``isolate``, answer each of its items with the refusal). Transient and auth errors are raised: they concern
        the call, not an item."""
        chunks = _slices(range(len(items)), self.batch_size(fields_per_item))
        results: list[ItemResult[T]] = []
        for chunk_results in await asyncio.gather(*(self._isolate(items, idx, send, isolate) for idx in chunks)):
            results.extend(chunk_results)
        return sorted(results, key=lambda r: r.index)

    async def _isolate(
        self, items: Sequence[Item], idx: list[int], send: Callable[[list[Item]], Awaitable[list[T]]], split: bool
    ) -> list[ItemResult[T]]:
        try:
            values = await send([items[i] for i in idx])
        except MoodleAuthError:
            raise
        except MoodlePermanentError as exc:
            if len(idx) == 1 or not split:
                return [ItemResult(i, error=exc) for i in idx]
            mid = len(idx) // 2
            left = await self._isolate(items, idx[:mid], send, split)
            right = await self._isolate(items, idx[mid:], send, split)
            return left + right
        return [ItemResult(i, value=v) for i, v in zip(idx, values, strict=False)]

    async def _create(
        self, function: str, key: str, items: Sequence[Item], isolate: bool = True
    ) -> list[ItemResult[dict[str, Any]]]:
        """A create call in all-or-nothing batches, isolating refused items; a value per item created."""

        async def send(chunk: list[Item]) -> list[dict[str, Any]]:
            created: list[dict[str, Any]] = await self.call(function, {key: chunk})
            return created

        return await self.batch(items, send, fields_per_item=10, isolate=isolate)

    async def _update(
        self, function: str, key: str, items: Sequence[Item], *, fields_per_item: int
    ) -> dict[int, dict[str, Any]]:
        """An update call, per item in Moodle (a refused item does not stop the others); the warnings by item id."""
        warnings: dict[int, dict[str, Any]] = {}
        for chunk in _slices(items, self.batch_size(fields_per_item)):
            answer = await self.call(function, {key: chunk})
            for w in (answer or {}).get("warnings", []):
                warnings[int(w.get("itemid") or 0)] = w
        return warnings

    async def _enrolments(
        self, function: str, enrolments: Sequence[Item], *, fields_per_item: int
    ) -> list[ItemResult[None]]:
        """An enrolment call in all-or-nothing batches (Moodle answers null), isolating refused enrolments."""

        async def send(chunk: list[Item]) -> list[None]:
            await self.call(function, {"enrolments": chunk})
            return [None] * len(chunk)

        return await self.batch(enrolments, send, fields_per_item=fields_per_item)

    # -- typed calls ---------------------------------------------------------------------

    async def site_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.call("core_webservice_get_site_info")
        return info

    async def token_user_id(self) -> int:
        """The id of the token's own user (read once per client: it does not change under a token)."""
        if self._token_user_id is None:
            self._token_user_id = int((await self.site_info())["userid"])
        return self._token_user_id

    async def get_users_by_field(self, field: str, values: Sequence[str | int]) -> list[dict[str, Any]]:
        """Users whose ``field`` is one of ``values``; Moodle drops matches it would not show us."""
        if not values:
            return []
        found: list[dict[str, Any]] = []
        for chunk in _slices(values, self.batch_size(1)):
            found.extend(await self.call("core_user_get_users_by_field", {"field": field, "values": chunk}))
        return found

    async def create_users(self, users: Sequence[Item], *, isolate: bool = True) -> list[ItemResult[dict[str, Any]]]:
        """Create users in all-or-nothing batches, isolating refused ones (``isolate``); values: ``{id, username}``."""
        return await self._create("core_user_create_users", "users", users, isolate)

    async def update_users(self, users: Sequence[Item]) -> dict[int, dict[str, Any]]:
        """Update users (per-item in Moodle); returns the warnings by user id."""
        return await self._update("core_user_update_users", "users", users, fields_per_item=10)

    # -- courses ---------------------------------------------------------------------------

    async def get_courses_by_field(self, field: str, value: str | int) -> list[dict[str, Any]]:
        answer = await self.call("core_course_get_courses_by_field", {"field": field, "value": value})
        return list((answer or {}).get("courses", []))

    async def create_courses(self, courses: Sequence[Item]) -> list[ItemResult[dict[str, Any]]]:
        """Create courses in all-or-nothing batches, isolating refused ones; values are ``{id, shortname}``."""
        return await self._create("core_course_create_courses", "courses", courses)

    async def update_courses(self, courses: Sequence[Item]) -> dict[int, dict[str, Any]]:
        """Update courses (per item in Moodle); returns the warnings by course id."""
        return await self._update("core_course_update_courses", "courses", courses, fields_per_item=8)

    async def duplicate_course(
        self,
        *,
        template_id: int,
        fullname: str,
        shortname: str,
        category_id: int,
        visible: bool,
        options: Mapping[str, bool],
    ) -> dict[str, Any]:
        """Copy a template (a whole backup and restore inside the request: slow). ``users`` is never sent (080)."""
        copy: dict[str, Any] = await self.call(
            "core_course_duplicate_course",
            {
                "courseid": template_id,
                "fullname": fullname,
                "shortname": shortname,
                "categoryid": category_id,
                "visible": visible,
                "options": [{"name": k, "value": v} for k, v in options.items()],
            },
            timeout=self.duplicate_timeout,
        )
        return copy

    # -- enrolments ------------------------------------------------------------------------

    async def enrol_users(self, enrolments: Sequence[Item]) -> list[ItemResult[None]]:
        """Manual enrolments in all-or-nothing batches (an upsert: re-sending clears dates; compare first)."""
        return await self._enrolments("enrol_manual_enrol_users", enrolments, fields_per_item=6)

    async def unenrol_users(self, enrolments: Sequence[Item]) -> list[ItemResult[None]]:
        """Manual unenrolments; ``roleid`` is never sent (Moodle 5.0 refuses it)."""
        clean = [{k: v for k, v in e.items() if k != "roleid"} for e in enrolments]
        return await self._enrolments("enrol_manual_unenrol_users", clean, fields_per_item=2)

    async def get_enrolled_users(self, course_id: int) -> list[dict[str, Any]]:
        return list(await self.call("core_enrol_get_enrolled_users", {"courseid": course_id}) or [])

    # -- completion ------------------------------------------------------------------------

    async def completion_status(self, *, course_id: int, user_id: int) -> dict[str, Any]:
        answer = await self.call(
            "core_completion_get_course_completion_status", {"courseid": course_id, "userid": user_id}
        )
        return dict((answer or {}).get("completionstatus") or {})

    async def users_courses(self, user_id: int) -> list[dict[str, Any]]:
        """A learner's active courses with their ``completed`` flag, in one call (recordings 130-132)."""
        return list(await self.call("core_enrol_get_users_courses", {"userid": user_id, "returnusercount": 0}) or [])


def _slices(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size``, in order, the last one shorter."""
    return (list(items[i : i + size]) for i in range(0, len(items), size))
