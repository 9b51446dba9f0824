"""CourseSalesClient: typed calls over CourseSales' JSON-in-query REST endpoint.

Errors: the tree is drawn once, in app/coursesales/errors.py.
Nothing here logs, and no message carries the URL or the password.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from app.coursesales import assumptions as a
from app.coursesales.errors import (
    CourseSalesAuthError,
    CourseSalesError,
    CourseSalesPermanentError,
    CourseSalesRefused,
    CourseSalesTransientError,
    CourseSalesUnexpectedAnswer,
)
from app.coursesales.operations import (
    course_dates_operation,
    is_last_page,
    options_operation,
    paging,
    step_operation,
)
from app.coursesales.schemas import (
    COURSE_DATES_PART,
    OPTIONS_PART,
    CourseCategory,
    CourseDate,
    FormField,
    categories_from_answer,
    course_dates_from_answer,
    forms_from_answer,
    require_part,
)
from app.upstream import NOT_SENT

T = TypeVar("T")
LOGIN_USERNAME = "LoginUsername"
LOGIN_PASSWORD = "LoginPassword"  # noqa: S105 - the key name, not a password
# Keys a caller may not choose: the login is always ours and always last; debug output is never asked for.
RESERVED_KEYS = frozenset({LOGIN_USERNAME, LOGIN_PASSWORD, "debug"})
# Our own request or configuration is wrong (bad scheme, malformed URL): repeating it cannot help.
MISCONFIGURED = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
MAX_ERROR_TEXT = 300
_URL_ECHO = re.compile(r"\S*" + re.escape(a.REST_PATH) + r"\S*")
_PASSWORD_ECHO = re.compile(r"loginpassword[\"'\s:=]*[^\s,&}\"']*", re.IGNORECASE)


class CourseSalesClient:
    """One CourseSales account reached with its web-services login; every answer checked, every error typed."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        username: str,
        password: str,
        page_size: int = 200,
        timeout: float = 30.0,
        max_in_flight: int = 4,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._http = http
        self.url = base_url.rstrip("/")
        self._endpoint = self.url + a.REST_PATH
        self._username = username
        self._password = password
        self.page_size = page_size
        self._timeout = timeout
        self._gate = asyncio.Semaphore(max_in_flight)  # this account's calls at once (a tenant's own cap)
        self.calls = 0

    # -- transport -----------------------------------------------------------------------------------------------

    def body(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The request JSON: the caller's keys in order (operation, then paging), the login last, never debug."""
        out = {k: v for k, v in payload.items() if k not in RESERVED_KEYS}
        out[LOGIN_USERNAME] = self._username
        out[LOGIN_PASSWORD] = self._password
        return out

    def _url(self, payload: Mapping[str, Any]) -> str:
        text = json.dumps(self.body(payload), separators=a.JSON_SEPARATORS, ensure_ascii=False)
        return f"{self._endpoint}?{quote(text, safe=a.QUERY_SAFE_CHARS)}"

    async def request(self, operation: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send one call (``operation`` only names it in errors); return the JSON object or raise typed errors."""
        url = self._url(payload)
        self.calls += 1
        try:
            async with self._gate:
                resp = await self._http.request(a.HTTP_METHOD, url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            # httpx messages and exc.request carry the URL, hence the password: keep the class name only.
            raise self._transport_error(operation, exc) from None
        return self._decode(operation, resp)

    @staticmethod
    def _transport_error(operation: str, exc: httpx.HTTPError) -> CourseSalesError:
        name = type(exc).__name__
        if isinstance(exc, MISCONFIGURED):
            return CourseSalesPermanentError(
                f"request could not be sent ({name}): check the base URL", operation=operation
            )
        if isinstance(exc, NOT_SENT):
            return CourseSalesTransientError(f"not sent: {name}", operation=operation, maybe_sent=False)
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "network error"
        return CourseSalesTransientError(f"{kind} after sending: {name}", operation=operation, maybe_sent=True)

    def _decode(self, operation: str, resp: httpx.Response) -> dict[str, Any]:
        status = resp.status_code
        self._check_status(operation, resp)
        try:
            answer = json.loads(resp.content)
        except ValueError:
            # The server took the call and failed to answer properly (PHP fatal error page): it may have applied it.
            raise CourseSalesTransientError(
                "answer is not JSON", operation=operation, status=status, maybe_sent=True
            ) from None
        text = a.error_text(answer)
        if text is not None or status in a.LOGIN_ERROR_HTTP_STATUSES:
            raise self._answer_error(operation, status, text or "")
        if answer == [] and a.EMPTY_ANSWER_MEANS_NO_RECORDS:
            return {}
        if not isinstance(answer, dict):
            raise CourseSalesUnexpectedAnswer(
                f"answer is a JSON {type(answer).__name__}, not an object", operation=operation, status=status
            )
        if status >= 400:
            raise CourseSalesRefused("error status with a JSON answer", operation=operation, status=status)
        return answer

    @staticmethod
    def _check_status(operation: str, resp: httpx.Response) -> None:
        """Statuses that settle the outcome before the body is read (JSON error bodies of 4xx are read later)."""
        status = resp.status_code
        if status >= 500:
            raise CourseSalesTransientError("server error", operation=operation, status=status, maybe_sent=True)
        if status == a.TOO_MANY_REQUESTS_STATUS:
            raise CourseSalesTransientError("too many requests", operation=operation, status=status, maybe_sent=False)
        if 300 <= status < 400:
            # Never repeat the Location header: it carries our query string, hence the password.
            raise CourseSalesRefused(
                "redirected: check the base URL (test accounts need http)", operation=operation, status=status
            )
        if status >= 400 and not _looks_json(resp):
            if status in a.LOGIN_ERROR_HTTP_STATUSES:
                raise CourseSalesAuthError("login refused", operation=operation, status=status)
            raise CourseSalesRefused("request refused", operation=operation, status=status)

    def _answer_error(self, operation: str, status: int, text: str) -> CourseSalesPermanentError:
        clean = self._scrub(text)
        if status in a.LOGIN_ERROR_HTTP_STATUSES or a.is_login_error(text):
            return CourseSalesAuthError(f"login refused: {clean}".rstrip(": "), operation=operation, status=status)
        return CourseSalesRefused(clean, operation=operation, status=status)

    def _scrub(self, text: str) -> str:
        """Server text without the password (raw, URL-encoded or JSON-escaped), our URL or any LoginPassword echo."""
        out = text
        if self._password:
            variants = {self._password, quote(self._password, safe=""), json.dumps(self._password)[1:-1]}
            for secret in sorted(variants, key=len, reverse=True):
                out = out.replace(secret, "***")
        out = _URL_ECHO.sub("[request URL]", out)
        out = _PASSWORD_ECHO.sub("[login redacted]", out)
        out = " ".join(out.split())
        return out if len(out) <= MAX_ERROR_TEXT else out[: MAX_ERROR_TEXT - 1] + "…"

    # -- paging --------------------------------------------------------------------------------------------------

    async def _pages(
        self,
        operation: str,
        payload: Mapping[str, Any],
        decode: Callable[[dict[str, Any]], list[T]],
        key: Callable[[T], int],
        page_size: int | None = None,
    ) -> AsyncIterator[tuple[dict[str, Any], list[T]]]:
        """Yield (answer, records not seen before) page by page until the last page; one page held at a time."""
        limit = page_size or self.page_size
        seen: set[int] = set()  # ids only: cheap even for a large account
        for page in range(a.FIRST_PAGE, a.FIRST_PAGE + a.MAX_PAGES):
            answer = await self.request(operation, {**payload, **paging(page, limit)})
            items = self._decoded(operation, answer, decode)
            fresh = [item for item in items if key(item) not in seen]
            seen.update(key(item) for item in fresh)
            yield answer, fresh
            if is_last_page(len(items), limit) or (a.STOP_WHEN_PAGE_REPEATS and items and not fresh):
                return
        raise CourseSalesUnexpectedAnswer(f"no last page after {a.MAX_PAGES} pages", operation=operation)

    @staticmethod
    def _decoded(operation: str, answer: dict[str, Any], decode: Callable[[dict[str, Any]], list[T]]) -> list[T]:
        try:
            return decode(answer)
        except CourseSalesUnexpectedAnswer as exc:
            exc.operation = exc.operation or operation
            raise

    # -- reading -------------------------------------------------------------------------------------------------

    async def check_login(self) -> int:
        """A cheap read proving the login works; returns how many course categories the answer held."""
        operation = "check_login"
        answer = await self.request(operation, {**options_operation(a.OPTION_DETAIL_NAMES), **paging(a.FIRST_PAGE, 1)})
        if a.LOGIN_CHECK_REQUIRES_SECTION and OPTIONS_PART not in answer:
            raise CourseSalesUnexpectedAnswer(
                "answer has no Options part: the login cannot be confirmed", operation=operation
            )
        return len(self._decoded(operation, answer, categories_from_answer))

    async def course_categories(
        self, *, page_size: int | None = None
    ) -> tuple[list[CourseCategory], dict[int, dict[int, FormField]]]:
        """Every course category with its form content, and the forms: {form id: {field id: FormField}}."""
        operation = "course_categories"
        categories: list[CourseCategory] = []
        forms: dict[int, dict[int, FormField]] = {}
        pages = self._pages(operation, options_operation(a.OPTION_DETAIL_ALL), _categories, lambda c: c.id, page_size)
        async for answer, fresh in pages:
            categories.extend(fresh)
            for form_id, fields in forms_from_answer(answer).items():
                forms.setdefault(form_id, {}).update(fields)
        return categories, forms

    async def iter_course_dates(self, *, page_size: int | None = None) -> AsyncIterator[CourseDate]:
        """Every course date of the Moodle listing, streamed page by page in CourseSales' order."""
        pages = self._pages("course_dates", course_dates_operation(), _course_dates, lambda d: d.id, page_size)
        async for _, fresh in pages:
            for course_date in fresh:
                yield course_date

    # -- writing -------------------------------------------------------------------------------------------------

    async def execute_step(self, *, document_external_id: str, step_id: int) -> dict[str, Any]:
        """Execute process step ``step_id`` on a Document. A timeout after sending leaves the outcome unknown
        (``CourseSalesTransientError.maybe_sent``): steps cannot be read back."""
        operation = "execute_step"
        answer = await self.request(operation, step_operation(document_external_id, step_id))
        refusal = a.step_refusal(answer)
        if refusal is not None:
            raise CourseSalesRefused(f"step not executed: {self._scrub(refusal)}", operation=operation, status=200)
        return answer

    async def post_registration(
        self, *, form_id: int, process_path_id: int, process_step_id: int, fields: Mapping[int, str]
    ) -> dict[str, Any]:
        """Create a registration Document (request shape assumed: see assumptions.registration_payload)."""
        payload = a.registration_payload(
            form_id=form_id, process_path_id=process_path_id, process_step_id=process_step_id, fields=fields
        )
        return await self.request("post_registration", payload)

    @staticmethod
    def registration_document_id(answer: Mapping[str, Any]) -> str | None:
        """Where the answer to ``post_registration`` names the new Document (assumption)."""
        return a.registration_document_id(answer)


def _categories(answer: dict[str, Any]) -> list[CourseCategory]:
    require_part(answer, OPTIONS_PART)
    return categories_from_answer(answer)


def _course_dates(answer: dict[str, Any]) -> list[CourseDate]:
    require_part(answer, COURSE_DATES_PART)
    return course_dates_from_answer(answer)


def _looks_json(resp: httpx.Response) -> bool:
    return resp.content.lstrip()[:1] in (b"{", b"[", b'"')
