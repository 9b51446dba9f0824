"""The one upstream error contract (app/upstream.py): both trees answer it, and faults and retries need nothing else.

Representative errors are raised by the real clients from answers at the HTTP boundary, as in production.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import pytest

from app.coursesales import errors as cs
from app.coursesales.api import CourseSalesApi
from app.coursesales.client import CourseSalesClient
from app.moodle import errors as moodle
from app.moodle.client import MoodleClient
from app.sync.upstreams import AUTH_FAILED, UNAVAILABLE, Fault, fault_of
from app.upstream import COURSESALES, MOODLE, Unusable, UpstreamError
from tests.fakes.coursesales import LOGIN_ERROR

Handler = Callable[[httpx.Request], httpx.Response]
SITE_INFO = "core_webservice_get_site_info"


def _classes(module: ModuleType) -> list[type[UpstreamError]]:
    return [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == module.__name__
    ]


MOODLE_CLASSES = _classes(moodle)
CS_CLASSES = _classes(cs)


def _instance(cls: type[UpstreamError]) -> UpstreamError:
    if issubclass(cls, cs.CourseSalesTransientError):
        return cls("failed", maybe_sent=True)
    return cls("failed")


def test_every_class_of_both_trees_is_an_upstream_error() -> None:
    assert len(MOODLE_CLASSES) == 9 and len(CS_CLASSES) == 6  # a new class shows up here, and below
    for cls in MOODLE_CLASSES + CS_CLASSES:
        assert issubclass(cls, UpstreamError), cls


@pytest.mark.parametrize("cls", MOODLE_CLASSES + CS_CLASSES, ids=lambda c: c.__name__)
def test_every_class_answers_the_contract(cls: type[UpstreamError]) -> None:
    exc = _instance(cls)
    assert exc.upstream == (MOODLE if cls in MOODLE_CLASSES else COURSESALES)
    assert isinstance(exc.transient, bool)
    assert exc.retry_after is None or isinstance(exc.retry_after, float)
    # A transient error knows whether a retry may repeat an applied call; a permanent one is never retried blindly.
    assert isinstance(exc.maybe_sent, bool) if exc.transient else exc.maybe_sent is None
    assert exc.unusable is None or isinstance(exc.unusable, Unusable)
    assert exc.message == "failed"


# -- representative errors ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    raised: type[UpstreamError]
    transient: bool
    maybe_sent: bool | None
    retry_after: float | None = None
    fault: tuple[str, str] | None = None  # (state, reason) of the upstream-wide fault, None for the call's own


def raises(exc_type: type[httpx.HTTPError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("failed", request=request)

    return handler


def answers(status: int, **kw: Any) -> Handler:
    return lambda _: httpx.Response(status, **kw)


def moodle_refuses(errorcode: str, message: str) -> Handler:
    return answers(
        200, json={"exception": "core\\exception\\moodle_exception", "errorcode": errorcode, "message": message}
    )


MOODLE_CASES: dict[str, tuple[Handler, Expect]] = {
    "network error before sending": (
        raises(httpx.ConnectError),
        Expect(
            moodle.MoodleTransientError, True, False,
            fault=(UNAVAILABLE, f"Moodle cannot be reached: {SITE_INFO}: network error: ConnectError"),
        ),
    ),
    "network error after sending": (
        raises(httpx.ReadError),
        Expect(
            moodle.MoodleTransientError, True, True,
            fault=(UNAVAILABLE, f"Moodle cannot be reached: {SITE_INFO}: network error: ReadError"),
        ),
    ),
    # A timeout stays the call's own (a slow function), unlike a network error.
    "timeout after sending": (raises(httpx.ReadTimeout), Expect(moodle.MoodleTransientError, True, True)),
    "timeout connecting": (raises(httpx.ConnectTimeout), Expect(moodle.MoodleTransientError, True, False)),
    "maintenance page (HTTP 503)": (
        answers(503, text="<html>upgrading</html>", headers={"Retry-After": "300"}),
        Expect(
            moodle.MoodleTransientError, True, True, 300.0,
            fault=(UNAVAILABLE, f"Moodle is in maintenance: {SITE_INFO}: Moodle answered HTTP 503 (maintenance)"),
        ),
    ),
    "maintenance mode (errorcode)": (
        moodle_refuses("sitemaintenance", "Site is being upgraded, please retry later."),
        Expect(
            moodle.MoodleTransientError, True, True,
            fault=(
                UNAVAILABLE,
                f"Moodle is in maintenance: {SITE_INFO}: Site is being upgraded, please retry later. [sitemaintenance]",
            ),
        ),
    ),
    "5xx": (answers(500, text="<html>oops</html>"), Expect(moodle.MoodleTransientError, True, True)),
    "invalid token": (
        moodle_refuses("invalidtoken", "Invalid token - token not found"),
        Expect(
            moodle.MoodleAuthError, False, None,
            fault=(
                AUTH_FAILED, f"Moodle refuses the token: {SITE_INFO}: Invalid token - token not found [invalidtoken]"
            ),
        ),
    ),
    "token user suspended": (
        moodle_refuses("wsaccessusersuspended", "Access control exception"),
        Expect(
            moodle.MoodleAuthError, False, None,
            fault=(
                AUTH_FAILED, f"Moodle refuses the token: {SITE_INFO}: Access control exception [wsaccessusersuspended]"
            ),
        ),
    ),
    "REST protocol disabled (HTTP 403)": (
        answers(403),
        Expect(
            moodle.MoodleAuthError, False, None,
            fault=(
                AUTH_FAILED,
                f"Moodle refuses the token: {SITE_INFO}: REST protocol is disabled on this Moodle (HTTP 403)",
            ),
        ),
    ),
    "refused parameter": (
        moodle_refuses("invalidparameter", "Invalid parameter value detected"),
        Expect(moodle.MoodleInvalidParameter, False, None),
    ),
}  # fmt: skip

CS_CASES: dict[str, tuple[Handler, Expect]] = {
    "network error before sending": (
        raises(httpx.ConnectError),
        Expect(
            cs.CourseSalesTransientError, True, False,
            fault=(UNAVAILABLE, "CourseSales cannot be reached: check_login: not sent: ConnectError"),
        ),
    ),
    "network error after sending": (raises(httpx.ReadError), Expect(cs.CourseSalesTransientError, True, True)),
    "timeout after sending": (raises(httpx.ReadTimeout), Expect(cs.CourseSalesTransientError, True, True)),
    "login refused (HTTP 401)": (
        answers(401, text="Unauthorized"),
        Expect(
            cs.CourseSalesAuthError, False, None,
            fault=(AUTH_FAILED, "CourseSales refuses the login: check_login: login refused (HTTP 401)"),
        ),
    ),
    "login refused in the answer": (
        answers(200, json=LOGIN_ERROR),
        Expect(
            cs.CourseSalesAuthError, False, None,
            fault=(
                AUTH_FAILED,
                "CourseSales refuses the login: check_login: login refused: "
                "Login failed: invalid username or password (HTTP 200)",
            ),
        ),
    ),
    # Refused unread, so certainly not applied. The client does not read Retry-After from CourseSales (yet).
    "429 with Retry-After": (
        answers(429, text="slow down", headers={"Retry-After": "30"}),
        Expect(
            cs.CourseSalesTransientError, True, False, None,
            fault=(UNAVAILABLE, "CourseSales cannot be reached: check_login: too many requests (HTTP 429)"),
        ),
    ),
    "5xx": (answers(503, text="down", headers={"Retry-After": "60"}), Expect(cs.CourseSalesTransientError, True, True)),
    "bad base URL": (raises(httpx.UnsupportedProtocol), Expect(cs.CourseSalesPermanentError, False, None)),
    "refused request": (answers(414, text="URI too long"), Expect(cs.CourseSalesRefused, False, None)),
}  # fmt: skip


async def moodle_error(handler: Handler) -> UpstreamError:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(UpstreamError) as caught:
            await MoodleClient(http, url="http://moodle.test", token="wstoken-1").site_info()
    return caught.value


async def coursesales_error(handler: Handler) -> UpstreamError:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(UpstreamError) as caught:
            await CourseSalesClient(http, base_url="http://acme.test", username="SOAP", password="Pa55").check_login()
    return caught.value


def check(exc: UpstreamError, upstream: str, expect: Expect) -> None:
    assert type(exc) is expect.raised
    assert (exc.upstream, exc.transient, exc.maybe_sent, exc.retry_after) == (
        upstream, expect.transient, expect.maybe_sent, expect.retry_after
    )  # fmt: skip
    assert fault_of(exc) == (None if expect.fault is None else Fault(upstream, *expect.fault))


@pytest.mark.parametrize("case", list(MOODLE_CASES))
async def test_moodle_errors_answer_the_contract(case: str) -> None:
    handler, expect = MOODLE_CASES[case]
    check(await moodle_error(handler), MOODLE, expect)


@pytest.mark.parametrize("case", list(CS_CASES))
async def test_coursesales_errors_answer_the_contract(case: str) -> None:
    handler, expect = CS_CASES[case]
    check(await coursesales_error(handler), COURSESALES, expect)


def test_faults_come_from_the_contract_not_the_message() -> None:
    reworded = moodle.MoodleTransientError("connection reset by peer", function=SITE_INFO, unreachable=True)
    assert fault_of(reworded) == Fault(MOODLE, UNAVAILABLE, f"Moodle cannot be reached: {reworded}")
    lookalike = moodle.MoodleTransientError("network error: ReadError", function=SITE_INFO)
    assert fault_of(lookalike) is None
    assert fault_of(ValueError("network error")) is None


# -- the CourseSales protocol -------------------------------------------------------------------------------------


def shape(fn: Callable[..., Any]) -> tuple[bool, list[tuple[str, Any, Any, Any]], Any]:
    """Whether it is a coroutine function, its parameters (without self) and its return annotation."""
    sig = inspect.signature(fn)
    params = [(p.name, p.kind, p.annotation, p.default) for p in sig.parameters.values() if p.name != "self"]
    return inspect.iscoroutinefunction(fn), params, sig.return_annotation


def test_coursesales_client_fits_the_api_protocol() -> None:
    members = {name for name in vars(CourseSalesApi) if not name.startswith("_")}
    assert members == {
        "url", "check_login", "course_categories", "iter_course_dates", "execute_step", "post_registration",
        "registration_document_id",
    }  # fmt: skip
    for name in members - {"url"}:
        assert shape(getattr(CourseSalesClient, name)) == shape(getattr(CourseSalesApi, name)), name
    assert inspect.isasyncgenfunction(CourseSalesClient.iter_course_dates)
    client = CourseSalesClient(httpx.AsyncClient(), base_url="http://acme.test/", username="SOAP", password="Pa55")
    assert client.url == "http://acme.test"
