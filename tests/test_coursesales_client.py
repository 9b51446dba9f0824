"""CourseSalesClient against the recorded guide example and the CourseSales fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from app.coursesales import assumptions
from app.coursesales.client import CourseSalesClient, course_dates_operation, options_operation, paging
from app.coursesales.errors import (
    CourseSalesAuthError,
    CourseSalesError,
    CourseSalesRefused,
    CourseSalesTransientError,
    CourseSalesUnexpectedAnswer,
)
from app.coursesales.schemas import (
    CourseCategory,
    FormField,
    categories_from_answer,
    course_dates_from_answer,
    forms_from_answer,
)
from tests.fakes.coursesales import CourseSalesFake

FIXTURES = Path(__file__).parent / "fixtures" / "coursesales"
RECORDED_REQUEST = json.loads((FIXTURES / "options-and-course-dates.request.json").read_text())
RECORDED_ANSWER = json.loads((FIXTURES / "options-and-course-dates.response.json").read_text())
BASE_URL = "http://acme.coursesales.test"
# Characters that must survive the JSON-in-query transport and be scrubbed from every message.
NASTY_PASSWORD = 'S3cr&t pa=ss"w/%rd+#'
DESCRIPTION_4384 = (
    "\n\n\nNationally is that training that is recognised under the AQF by ASQA the National Training Authority</p>\n"
)


@pytest.fixture
def fake() -> CourseSalesFake:
    return CourseSalesFake()


@pytest.fixture
async def http(fake: CourseSalesFake) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as client:
        yield client


def make_client(http: httpx.AsyncClient, fake: CourseSalesFake, **kw: Any) -> CourseSalesClient:
    login = {"username": fake.username, "password": fake.password, **kw}
    return CourseSalesClient(http, base_url=BASE_URL + "/", **login)


async def with_fake(fake: CourseSalesFake, run: Callable[[CourseSalesClient], Any], **kw: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as http:
        return await run(make_client(http, fake, **kw))


async def all_dates(client: CourseSalesClient, **kw: Any) -> list[Any]:
    return [d async for d in client.iter_course_dates(**kw)]


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], password: str = NASTY_PASSWORD
) -> CourseSalesClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return CourseSalesClient(http, base_url=BASE_URL, username="SOAP_USER", password=password)


# -- the recorded example -----------------------------------------------------------------------------------------


def test_recorded_categories_decode_exactly() -> None:
    assert categories_from_answer(RECORDED_ANSWER) == [
        CourseCategory(
            id=4384,
            name="Nationally Recognised Training",
            parent_id=None,  # depth 1: 4281 is the option type's root, not a category
            depth=1,
            form_id=1639,
            fields={8620: "40", 8144: DESCRIPTION_4384},
        ),
        CourseCategory(
            id=4383,
            name="CPC30413 - Certificate III in Demolition",
            parent_id=4384,
            depth=2,
            form_id=1639,
            fields={8620: "", 8144: ""},
        ),
    ]


def test_recorded_forms_decode_exactly() -> None:
    assert forms_from_answer(RECORDED_ANSWER) == {
        1639: {
            8620: FormField(id=8620, name="Moodle Category Id", label="Moodle Category Id", type="Text"),
            8144: FormField(id=8144, name="Description", label="Description", type="HTML"),
        }
    }


def test_recorded_course_date_decodes_exactly() -> None:
    [course_date] = course_dates_from_answer(RECORDED_ANSWER)
    assert course_date.id == 26519
    assert (course_date.start, course_date.end) == (date(2015, 12, 1), date(2015, 12, 1))
    assert (course_date.status_id, course_date.visibility) == (1, 2)
    assert course_date.category_id == 4401
    assert course_date.category_name == "Asbestos Removal CPCCDE3015A - Class A"
    assert (course_date.venue_id, course_date.places_total) == (1004, 20)
    meta = RECORDED_ANSWER["Course Dates"]["CourseDateListNextId meta"]
    assert set(course_date.raw) == set(meta)
    assert course_date.raw["CourseDateLocation"] == "Brisbane Queensland Australia"
    assert course_date.raw["CourseDateFmtPrcSaving"] == 0  # column 35 holds a number, not a string
    assert course_date.raw["CourseDateFmtPrcNext"] == ""  # column 36, recorded between 34 and 14
    assert course_date.raw["CourseDatePriceRuleDate"] == "0000-00-00"
    assert course_date.raw["PriceMinimum"] is None  # named in meta, absent from the record


async def test_guide_example_request_and_answer(fake: CourseSalesFake, http: httpx.AsyncClient) -> None:
    client = make_client(http, fake)
    payload = {**options_operation("All"), **course_dates_operation(), **paging(1, 1), "debug": "on"}
    answer = await client.request("guide example", payload)
    expected = {k: v for k, v in RECORDED_REQUEST.items() if k != "debug"}
    expected |= {"LoginUsername": fake.username, "LoginPassword": fake.password}
    [sent] = fake.requests
    assert sent == expected
    assert list(sent) == list(expected)  # operation first, then paging, login last
    assert answer == RECORDED_ANSWER  # the fake answers the recorded request with the recorded answer


# -- building requests --------------------------------------------------------------------------------------------


async def test_request_json_order_and_encoding() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"Options": {"Course Category": []}})

    client = mock_client(handler)
    assert await client.check_login() == 0
    [request] = seen
    assert request.method == "GET"
    assert request.url.path == "/rest/index"
    raw_query = request.url.query.decode()
    assert not set(raw_query) & set('{}"& =#+'), "the JSON is percent-encoded whole"
    body = json.loads(unquote(raw_query))
    assert list(body) == ["Options", "page", "pageItemLimit", "LoginUsername", "LoginPassword"]
    assert body["Options"] == {"OptionType": ["Course Category"], "OptionSoapDetail": "Names"}
    assert (body["page"], body["pageItemLimit"]) == (1, "1")
    assert body["LoginPassword"] == NASTY_PASSWORD


async def test_check_login_counts_categories(fake: CourseSalesFake, http: httpx.AsyncClient) -> None:
    client = make_client(http, fake)
    assert await client.check_login() == 2
    assert client.calls == fake.calls == 1
    assert all("debug" not in r for r in fake.requests)


async def test_check_login_needs_the_options_part() -> None:
    client = mock_client(lambda _: httpx.Response(200, json={"status": "ok"}))
    with pytest.raises(CourseSalesUnexpectedAnswer):
        await client.check_login()


# -- paging -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_dates", "expected_calls"), [(450, 3), (400, 3), (199, 1), (0, 1)])
async def test_course_dates_page_until_the_last(n_dates: int, expected_calls: int) -> None:
    fake = CourseSalesFake(seed=False)
    _, date_ids = fake.generate(3, n_dates)
    dates = await with_fake(fake, lambda c: all_dates(c), page_size=200)
    assert [d.id for d in dates] == date_ids
    assert fake.calls == expected_calls
    assert [(r["page"], r["pageItemLimit"]) for r in fake.requests] == [
        (p, "200") for p in range(1, expected_calls + 1)
    ]
    assert all(next(iter(r)) == "Course Dates" for r in fake.requests)


async def test_course_dates_stream_one_page_at_a_time() -> None:
    fake = CourseSalesFake(seed=False)
    fake.generate(1, 45)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as http:
        dates = make_client(http, fake).iter_course_dates(page_size=10)
        first = await anext(dates)
        assert (first.id, fake.calls) == (100_000, 1)
        rest = [d async for d in dates]
    assert len(rest) == 44
    assert fake.calls == 5


async def test_generated_course_dates_decode(fake: CourseSalesFake, http: httpx.AsyncClient) -> None:
    fake.add_category(5000, "Forklift", moodle_category_id="12", template="77")
    fake.add_course_date(7001, date(2031, 2, 3), "0000-00-00", 5000, status_id=3, visibility=1)
    dates = {d.id: d for d in await all_dates(make_client(http, fake))}
    assert list(dates) == [26519, 7001]
    added = dates[7001]
    assert (added.start, added.end, added.status_id, added.visibility) == (date(2031, 2, 3), None, 3, 1)
    assert (added.category_id, added.category_name) == (5000, "Forklift")


@pytest.mark.parametrize("paged", [True, False])
async def test_categories_all_pages_with_forms(paged: bool) -> None:
    fake = CourseSalesFake(options_paged=paged)
    ids, _ = fake.generate(448, 0)
    categories, forms = await with_fake(fake, lambda c: c.course_categories(), page_size=200)
    assert [c.id for c in categories] == [4384, 4383, *ids]
    assert fake.calls == (3 if paged else 1)  # unpaged: more records than asked for means the whole list
    assert forms[1639][8621] == FormField(8621, "Moodle Course Template", "Moodle Course Template", "Text")
    first, child = categories[2], categories[3]
    assert (first.parent_id, first.depth, first.fields[8620]) == (None, 1, "100")
    assert (child.parent_id, child.depth) == (first.id, 2)
    assert all(r["Options"]["OptionSoapDetail"] == "All" for r in fake.requests)


async def test_a_server_ignoring_page_does_not_loop() -> None:
    fake = CourseSalesFake(seed=False)
    fake.generate(1, 5)

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(unquote(request.url.query.decode()))
        body["page"] = 1  # the server ignores `page`
        return httpx.Response(200, json=fake.handle(body)[1])

    client = mock_client(handler, password=fake.password)
    dates = await all_dates(client, page_size=5)
    assert len(dates) == 5
    assert client.calls == 2


# -- decoding through meta ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        {"shuffle_columns": True},
        {"array_records": True},
        {"string_meta": True},
        {"shuffle_columns": True, "array_records": True},
    ],
)
async def test_column_layouts_decode_the_same(flags: dict[str, bool]) -> None:
    async def read(fake: CourseSalesFake) -> tuple[Any, ...]:
        fake.generate(6, 12)
        categories, forms = await with_fake(fake, lambda c: c.course_categories())
        dates = await with_fake(fake, all_dates)
        return categories, forms, dates

    plain = await read(CourseSalesFake())
    other_fake = CourseSalesFake(**flags)
    assert await read(other_fake) == plain
    if flags.get("shuffle_columns"):
        answer = other_fake.handle(other_fake.requests[-1])[1]
        assert (
            answer["Course Dates"]["CourseDateListNextId meta"]
            != RECORDED_ANSWER["Course Dates"]["CourseDateListNextId meta"]
        )


# -- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 401])
async def test_bad_login_is_an_auth_error(status: int) -> None:
    fake = CourseSalesFake(login_error_status=status)
    fake.password = NASTY_PASSWORD
    with pytest.raises(CourseSalesAuthError) as caught:
        await with_fake(fake, lambda c: c.check_login(), password="wrong-" + NASTY_PASSWORD)
    assert caught.value.operation == "check_login"
    assert caught.value.status == status
    with pytest.raises(CourseSalesAuthError):
        await with_fake(fake, all_dates, password="wrong")


async def test_http_403_without_json_is_an_auth_error() -> None:
    client = mock_client(lambda _: httpx.Response(403, text="<h1>Forbidden</h1>"))
    with pytest.raises(CourseSalesAuthError):
        await client.check_login()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"error": "Invalid username or password"}, CourseSalesAuthError),
        ({"Error": {"message": "Login failed"}}, CourseSalesAuthError),
        ("Access denied: check the login", CourseSalesAuthError),
        ({"error": "Document ABC not found"}, CourseSalesRefused),
        ({"errors": ["Step 77 is not on the current process path"]}, CourseSalesRefused),
        ({"Status": False}, CourseSalesRefused),
        (42, CourseSalesUnexpectedAnswer),
    ],
)
async def test_error_answers_are_typed(answer: Any, error: type[CourseSalesError]) -> None:
    client = mock_client(lambda _: httpx.Response(200, json=answer))
    with pytest.raises(error) as caught:
        await client.execute_step(document_external_id="ABC", step_id=77)
    assert type(caught.value) is error
    assert caught.value.operation == "execute_step"


@pytest.mark.parametrize(
    ("kind", "maybe_sent", "status", "applied"),
    [
        ("500", True, 500, False),
        ("timeout_before", False, None, False),
        ("timeout_after", True, None, True),
        ("nonjson", True, 200, False),
    ],
)
async def test_faults_are_transient_and_say_whether_sent(
    fake: CourseSalesFake, http: httpx.AsyncClient, kind: str, maybe_sent: bool, status: int | None, applied: bool
) -> None:
    client = make_client(http, fake)
    fake.fail_next(1, kind)
    with pytest.raises(CourseSalesTransientError) as caught:
        await client.execute_step(document_external_id="DOC-1", step_id=77)
    assert caught.value.maybe_sent is maybe_sent
    assert caught.value.status == status
    assert caught.value.transient
    assert fake.steps == ([("DOC-1", 77)] if applied else [])
    assert fake.calls == (0 if kind == "timeout_before" else 1)
    await client.execute_step(document_external_id="DOC-1", step_id=77)  # the fault was one-off
    assert client.calls == 2


@pytest.mark.parametrize(
    ("respond", "error", "maybe_sent"),
    [
        (lambda r: httpx.Response(503, text="down"), CourseSalesTransientError, True),
        (lambda r: httpx.Response(429, text="slow down"), CourseSalesTransientError, False),
        (lambda r: httpx.Response(301, headers={"Location": str(r.url)}), CourseSalesRefused, None),
        (lambda r: httpx.Response(414, text="URI too long"), CourseSalesRefused, None),
    ],
)
async def test_http_statuses(
    respond: Callable[[httpx.Request], httpx.Response], error: type[CourseSalesError], maybe_sent: bool | None
) -> None:
    with pytest.raises(error) as caught:
        await mock_client(respond).check_login()
    assert getattr(caught.value, "maybe_sent", None) is maybe_sent
    assert NASTY_PASSWORD not in str(caught.value)


def _raiser(exc_type: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"failed for {request.url}", request=request)  # httpx messages may carry the URL

    return handler


@pytest.mark.parametrize(
    ("exc_type", "maybe_sent"),
    [
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.ReadError, True),
        (httpx.RemoteProtocolError, True),
        (httpx.WriteTimeout, True),
    ],
)
async def test_transport_errors(exc_type: type[httpx.HTTPError], maybe_sent: bool) -> None:
    with pytest.raises(CourseSalesTransientError) as caught:
        await mock_client(_raiser(exc_type)).execute_step(document_external_id="X", step_id=1)
    assert caught.value.maybe_sent is maybe_sent
    assert exc_type.__name__ in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_no_message_carries_the_password() -> None:
    echo = f'Login failed for LoginPassword "{NASTY_PASSWORD}" at {BASE_URL}/rest/index?'
    responders: list[Callable[[httpx.Request], httpx.Response]] = [
        lambda r: httpx.Response(200, json={"error": echo + str(r.url)}),
        lambda r: httpx.Response(200, json={"error": f"bad request {unquote(str(r.url))}"}),
        lambda r: httpx.Response(200, json={"message": {"detail": json.dumps({"LoginPassword": NASTY_PASSWORD})}}),
        lambda r: httpx.Response(500, text=str(r.url)),
        lambda r: httpx.Response(200, text=f"<b>Fatal</b> {r.url}"),
        lambda r: httpx.Response(302, headers={"Location": str(r.url)}),
        _raiser(httpx.ReadTimeout),
        _raiser(httpx.ConnectError),
        _raiser(httpx.UnsupportedProtocol),
    ]
    for respond in responders:
        with pytest.raises(CourseSalesError) as caught:
            await mock_client(respond).execute_step(document_external_id="DOC", step_id=1)
        for text in (str(caught.value), repr(caught.value), caught.value.message):
            assert NASTY_PASSWORD not in text
            assert "LoginPassword" not in text
            assert "rest/index" not in text


async def test_decode_errors_are_permanent() -> None:
    broken = {"Course Dates": {"CourseDateListNextId": {"1": {"0": "1"}}}}  # records without their meta map
    client = mock_client(lambda _: httpx.Response(200, json=broken))
    with pytest.raises(CourseSalesUnexpectedAnswer) as caught:
        await all_dates(client)
    assert caught.value.operation == "course_dates"
    silent = mock_client(lambda _: httpx.Response(200, json={"Result": "nothing"}))
    with pytest.raises(CourseSalesUnexpectedAnswer):
        await all_dates(silent)


async def test_empty_answer_means_no_records() -> None:
    client = mock_client(lambda _: httpx.Response(200, json=[]))
    assert await all_dates(client) == []
    assert client.calls == 1


# -- writing ------------------------------------------------------------------------------------------------------


async def test_execute_step_sends_the_documented_json(fake: CourseSalesFake, http: httpx.AsyncClient) -> None:
    client = make_client(http, fake)
    answer = await client.execute_step(document_external_id="CS-9F2A", step_id=412)
    [sent] = fake.requests
    assert sent == {
        "Status": {"StatusTableName": "Documents"},
        "DocumentExternalId": "CS-9F2A",
        "StatusStepId": 412,
        "LoginUsername": fake.username,
        "LoginPassword": fake.password,
    }
    assert list(sent) == ["Status", "DocumentExternalId", "StatusStepId", "LoginUsername", "LoginPassword"]
    assert fake.steps == [("CS-9F2A", 412)]
    assert answer  # any answer that is not an error answer means the step ran (assumption)


async def test_execute_step_on_unknown_document_is_refused(fake: CourseSalesFake, http: httpx.AsyncClient) -> None:
    fake.add_document("KNOWN")
    with pytest.raises(CourseSalesRefused, match="not found"):
        await make_client(http, fake).execute_step(document_external_id="OTHER", step_id=1)
    assert fake.steps == []


async def test_post_registration_then_step(fake: CourseSalesFake, http: httpx.AsyncClient) -> None:
    client = make_client(http, fake)
    fields = {9001: "Ada", 9002: "Lovelace", 9003: "ada@example.org", 9004: "+61 7 5555 0100"}
    answer = await client.post_registration(form_id=2001, process_path_id=31, process_step_id=401, fields=fields)
    document = client.registration_document_id(answer)
    assert document == "CSREG000001"
    assert fake.registrations == [
        {
            "form_id": 2001,
            "process_path_id": 31,
            "process_step_id": 401,
            "fields": fields,
            "document_external_id": document,
        }
    ]
    assert list(fake.requests[-1])[-2:] == ["LoginUsername", "LoginPassword"]
    await client.execute_step(document_external_id=document, step_id=402)
    assert fake.steps == [(document, 402)]


def test_registration_document_id_assumption() -> None:
    assert assumptions.registration_document_id({"DocumentExternalId": "A1"}) == "A1"
    assert assumptions.registration_document_id({"Documents": {"DocumentExternalId": 77}}) == "77"
    assert assumptions.registration_document_id({"Documents": {"DocumentId": "5"}}) is None
