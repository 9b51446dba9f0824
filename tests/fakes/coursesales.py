"""A CourseSales account in memory, served as ``GET /rest/index?<JSON>`` in the guide's column-indexed format.

Usage::

    fake = CourseSalesFake()                      # seeded with the guide's example; login SOAP_USER / SOAP_PASSWORD
    transport = httpx.ASGITransport(app=fake)     # the fake itself is the ASGI callable (fake.app is the same)
    async with httpx.AsyncClient(transport=transport) as http:
        client = CourseSalesClient(http, base_url="http://cs.test", username=fake.username, password=fake.password)

Seed: the recorded answer of tests/fixtures/coursesales (categories 4384 and 4383 on form 1639, course date
26519); with the recorded request, the fake answers exactly the recorded answer. Data helpers: ``add_category``,
``add_course_date``, ``generate``, ``add_document``. Logs: ``calls`` (requests received), ``requests`` (each
decoded request JSON), ``steps`` ((document external id, step id) executed), ``registrations``.

Flags: ``shuffle_columns`` (column numbers permuted in records and meta maps alike), ``array_records`` (records
as arrays instead of objects keyed by column number), ``string_meta`` (meta numbers as strings), ``options_paged``
(off by default: the recording answered two categories to pageItemLimit "1"), ``login_error_status``.

Where CourseSales is not documented the fake follows app/coursesales/assumptions.py, written out here
independently: a bad login answers ``{"error": "Login failed: ..."}``, a registration is
``{"Documents": {"FormId", "ProcessPathId", "StatusStepId", "DocumentContent"}}`` answered with
``{"Documents": {"DocumentExternalId", "DocumentId"}}``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

REST_PATH = "/rest/index"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "coursesales"
RECORDED_REQUEST: dict[str, Any] = json.loads((FIXTURES / "options-and-course-dates.request.json").read_text())
RECORDED_ANSWER: dict[str, Any] = json.loads((FIXTURES / "options-and-course-dates.response.json").read_text())

CATEGORY = "Course Category"
FORMS = "Course Category Forms"
DATE_TYPE = "CourseDateListNextId"
OPTIONS_META: dict[str, int] = RECORDED_ANSWER["Options meta"][CATEGORY]
DATE_META: dict[str, int] = RECORDED_ANSWER["Course Dates"][DATE_TYPE + " meta"]
# Column order of a category record as recorded (1, 2, 3, 5, 4, 6); "Names" answers carry the first four only.
CATEGORY_COLUMNS = ("OptionId", "OptionName", "OptionDepth", "OptionParentId", "OptionFormId", "OptionContent")
NAMES_COLUMNS = frozenset(OPTIONS_META[n] for n in CATEGORY_COLUMNS[:4])
DATE_TEMPLATE: dict[int, Any] = {int(k): v for k, v in RECORDED_ANSWER["Course Dates"][DATE_TYPE]["26519"].items()}

DEFAULT_FORM = 1639
MOODLE_CATEGORY_FIELD = 8620
TEMPLATE_FIELD = 8621
ROOT_OPTION_ID = 4281  # what the recording gives a depth-1 category as parent: the option type's root node
LOGIN_ERROR = {"error": "Login failed: invalid username or password"}
FAULT_KINDS = frozenset({"500", "timeout_before", "timeout_after", "nonjson"})
PHP_FATAL_PAGE = (
    "<br />\n<b>Fatal error</b>:  Maximum execution time of 30 seconds exceeded in "
    "<b>/var/www/coursesales/rest/index.php</b> on line <b>812</b><br />\n"
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, dict[str, Any]]


def _permutation(kind: str, size: int) -> dict[int, int]:
    """A fixed, never-identity permutation of column numbers 0..size-1."""
    order = list(range(size))
    random.Random(kind).shuffle(order)
    if order == list(range(size)):
        order = order[1:] + order[:1]
    return dict(zip(range(size), order, strict=True))


def _date_text(value: date | str | None) -> str:
    if value is None:
        return "0000-00-00"
    return value.isoformat() if isinstance(value, date) else value


def _page(items: list[Any], page: Any, limit: Any) -> list[Any]:
    """CourseSales-style paging: 1-based ``page``, ``pageItemLimit`` as string or number; no limit, no paging."""
    try:
        size = int(limit)
        number = int(page or 1)
    except (TypeError, ValueError):
        return items
    if size < 1:
        return items
    start = (max(number, 1) - 1) * size
    return items[start : start + size]


class CourseSalesFake:
    """A stateful CourseSales account answering the REST calls the sync uses."""

    def __init__(
        self,
        username: str = "SOAP_USER",
        password: str = "SOAP_PASSWORD",  # noqa: S107 - the recording's placeholder
        *,
        seed: bool = True,
        shuffle_columns: bool = False,
        array_records: bool = False,
        string_meta: bool = False,
        options_paged: bool = False,
        login_error_status: int = 200,
    ) -> None:
        self.username = username
        self.password = password
        self.shuffle_columns = shuffle_columns
        self.array_records = array_records
        self.string_meta = string_meta
        self.options_paged = options_paged
        self.login_error_status = login_error_status
        # Records are kept in the recording's own column numbering; the flags apply when answering.
        self.categories: dict[int, dict[int, Any]] = {}
        self.forms: dict[int, dict[int, dict[str, Any]]] = {}
        self.course_dates: dict[int, dict[int, Any]] = {}
        self.documents: set[str] | None = None  # None: any Document external id is accepted
        self.steps: list[tuple[str, int]] = []
        self.registrations: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.calls = 0
        self._faults: list[str] = []
        self._option_perm = _permutation("options", max(OPTIONS_META.values()) + 1)
        self._date_perm = _permutation("dates", max([*DATE_META.values(), *DATE_TEMPLATE]) + 1)
        if seed:
            self._seed_recording()

    @property
    def app(self) -> CourseSalesFake:
        return self

    # -- data helpers ---------------------------------------------------------------------------------------------

    def _seed_recording(self) -> None:
        options = RECORDED_ANSWER["Options"]
        for record in options[CATEGORY]:
            self.categories[int(record["1"])] = {int(k): copy.deepcopy(v) for k, v in record.items()}
        for form_id, fields in options[FORMS].items():
            self.forms[int(form_id)] = {int(k): copy.deepcopy(v) for k, v in fields.items()}
        for date_id, record in RECORDED_ANSWER["Course Dates"][DATE_TYPE].items():
            self.course_dates[int(date_id)] = {int(k): copy.deepcopy(v) for k, v in record.items()}

    def _ensure_form(self, form_id: int) -> dict[int, dict[str, Any]]:
        """The form, with a "Moodle Category Id" field and a "Moodle Course Template" field."""
        form = self.forms.setdefault(form_id, {})
        base = RECORDED_ANSWER["Options"][FORMS][str(DEFAULT_FORM)][str(MOODLE_CATEGORY_FIELD)]
        if MOODLE_CATEGORY_FIELD not in form:
            form[MOODLE_CATEGORY_FIELD] = copy.deepcopy(base)
        if TEMPLATE_FIELD not in form:
            template = copy.deepcopy(base)
            template.update({"1": str(TEMPLATE_FIELD), "FieldName": "Moodle Course Template"})
            template["FieldLabel"] = "Moodle Course Template"
            form[TEMPLATE_FIELD] = template
        return form

    def add_category(
        self,
        id: int,
        name: str,
        parent_id: int | None = None,
        moodle_category_id: str = "",
        template: str = "",
        form_id: int = DEFAULT_FORM,
    ) -> int:
        """Add a course category on ``form_id`` (the form gains the template field); returns its id."""
        form = self._ensure_form(form_id)
        values = {MOODLE_CATEGORY_FIELD: moodle_category_id, TEMPLATE_FIELD: template}
        parent = self.categories.get(parent_id) if parent_id else None
        depth = int(parent[OPTIONS_META["OptionDepth"]]) + 1 if parent else 1
        cells: list[Any] = [
            str(id),
            name,
            str(depth),
            str(parent_id if parent_id else ROOT_OPTION_ID),
            str(form_id),
            {str(field_id): values.get(field_id, "") for field_id in form},
        ]
        self.categories[id] = {OPTIONS_META[col]: value for col, value in zip(CATEGORY_COLUMNS, cells, strict=True)}
        return id

    def add_course_date(
        self,
        id: int,
        start: date | str | None,
        end: date | str | None,
        category_id: int,
        status_id: int = 1,
        visibility: int = 2,
        category_name: str | None = None,
    ) -> int:
        """Add a course date shaped like the recorded one (every column present); returns its id."""
        if category_name is None:
            category = self.categories.get(category_id)
            category_name = category[OPTIONS_META["OptionName"]] if category else f"Course master {category_id}"
        record = copy.deepcopy(DATE_TEMPLATE)
        for column, value in {
            "CourseDateId": str(id),
            "CourseDateStart": _date_text(start),
            "CourseDateEnd": _date_text(end),
            "StatusId": str(status_id),
            "Visibility": str(visibility),
            "CourseMasterCourseCategoryId": str(category_id),
            "CourseMasterDisplayCategoryName": category_name,
        }.items():
            record[DATE_META[column]] = value
        self.course_dates[id] = record
        return id

    def generate(
        self,
        n_categories: int,
        n_dates: int,
        *,
        first_category_id: int = 10_000,
        first_date_id: int = 100_000,
        first_start: date = date(2030, 1, 6),
    ) -> tuple[list[int], list[int]]:
        """Bulk data: every fourth category is top-level, the others its children; dates spread over them."""
        category_ids: list[int] = []
        top = None
        for i in range(n_categories):
            cid = first_category_id + i
            parent = None if i % 4 == 0 else top
            self.add_category(cid, f"Generated category {i}", parent, moodle_category_id=str(100 + i))
            top = cid if parent is None else top
            category_ids.append(cid)
        pool = category_ids or list(self.categories) or [0]
        date_ids = []
        for i in range(n_dates):
            start = first_start + timedelta(days=i)
            date_ids.append(
                self.add_course_date(first_date_id + i, start, start + timedelta(days=1), pool[i % len(pool)])
            )
        return category_ids, date_ids

    def add_document(self, external_id: str) -> None:
        """Make Document external ids known: once any is added, steps on unknown Documents are refused."""
        if self.documents is None:
            self.documents = set()
        self.documents.add(external_id)

    def fail_next(self, n: int = 1, kind: str = "500") -> None:
        """Make the next ``n`` calls fail.

        ``"500"``: HTTP 500 page, nothing applied. ``"timeout_before"``: ``httpx.ConnectError`` raised into the
        client before the call is seen (certainly not sent). ``"timeout_after"``: the call is applied, then
        ``httpx.ReadTimeout`` is raised (sent, outcome unknown to the client). ``"nonjson"``: HTTP 200 with a PHP
        fatal-error page, nothing applied.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(FAULT_KINDS)}")
        self._faults.extend([kind] * n)

    # -- answers --------------------------------------------------------------------------------------------------

    def handle(self, request: Any) -> Answer:
        """Answer one decoded request JSON: (HTTP status, answer object). Also usable without ASGI."""
        if not isinstance(request, dict):
            return 200, {"error": "Invalid request"}
        if request.get("LoginUsername") != self.username or request.get("LoginPassword") != self.password:
            return self.login_error_status, dict(LOGIN_ERROR)
        if isinstance(request.get("Status"), dict):
            return self._step(request)
        if isinstance(request.get("Documents"), dict):
            return self._registration(request["Documents"])
        answer: dict[str, Any] = {}
        if isinstance(request.get("Options"), dict):
            answer.update(self._options(request["Options"], request.get("page"), request.get("pageItemLimit")))
        if isinstance(request.get("Course Dates"), dict):
            answer.update(
                self._course_dates(request["Course Dates"], request.get("page"), request.get("pageItemLimit"))
            )
        return (200, answer) if answer else (200, {"error": "Unknown request"})

    def _meta(self, meta: dict[str, int], perm: dict[int, int], columns: frozenset[int] | None = None) -> dict:
        out = {name: self._col(col, perm) for name, col in meta.items() if columns is None or col in columns}
        return {name: str(col) for name, col in out.items()} if self.string_meta else out

    def _col(self, column: int, perm: dict[int, int]) -> int:
        return perm[column] if self.shuffle_columns else column

    def _record(self, record: dict[int, Any], perm: dict[int, int], columns: frozenset[int] | None = None) -> Any:
        cells = {self._col(col, perm): value for col, value in record.items() if columns is None or col in columns}
        if self.array_records:
            return [cells.get(i) for i in range(max(cells) + 1)]
        return {str(col): value for col, value in cells.items()}

    def _options(self, request: dict[str, Any], page: Any, limit: Any) -> dict[str, Any]:
        detail_all = request.get("OptionSoapDetail") == "All"
        columns = None if detail_all else NAMES_COLUMNS
        wanted = CATEGORY in (request.get("OptionType") or [])
        chosen = list(self.categories.values()) if wanted else []
        if self.options_paged:
            chosen = _page(chosen, page, limit)
        part: dict[str, Any] = {CATEGORY: [self._record(r, self._option_perm, columns) for r in chosen]}
        if detail_all:
            form_ids = dict.fromkeys(int(r[OPTIONS_META["OptionFormId"]]) for r in chosen)
            part[FORMS] = {
                str(fid): {str(k): v for k, v in self.forms[fid].items()} for fid in form_ids if fid in self.forms
            }
        return {"Options": part, "Options meta": {CATEGORY: self._meta(OPTIONS_META, self._option_perm, columns)}}

    def _course_dates(self, request: dict[str, Any], page: Any, limit: Any) -> dict[str, Any]:
        wanted = DATE_TYPE in (request.get("CourseDateType") or [])
        chosen = _page(list(self.course_dates.values()), page, limit) if wanted else []
        id_col = DATE_META["CourseDateId"]
        # PHP's json_encode turns an empty array into [], not {}.
        records: Any = {str(r[id_col]): self._record(r, self._date_perm) for r in chosen} or []
        return {"Course Dates": {DATE_TYPE: records, DATE_TYPE + " meta": self._meta(DATE_META, self._date_perm)}}

    def _step(self, request: dict[str, Any]) -> Answer:
        document = request.get("DocumentExternalId")
        step = request.get("StatusStepId")
        if request["Status"].get("StatusTableName") != "Documents":
            return 200, {"error": "Unknown status table"}
        if not isinstance(document, str) or not document or not isinstance(step, int) or isinstance(step, bool):
            return 200, {"error": "DocumentExternalId and StatusStepId are required"}
        if self.documents is not None and document not in self.documents:
            return 200, {"error": f"Document {document} not found"}
        self.steps.append((document, step))
        return 200, {"Documents": {"DocumentExternalId": document, "StatusStepId": step}}

    def _registration(self, request: dict[str, Any]) -> Answer:
        content = request.get("DocumentContent")
        if not all(isinstance(request.get(k), int) for k in ("FormId", "ProcessPathId", "StatusStepId")):
            return 200, {"error": "FormId, ProcessPathId and StatusStepId are required"}
        if not isinstance(content, dict):
            return 200, {"error": "DocumentContent is required"}
        number = len(self.registrations) + 1
        external_id = f"CSREG{number:06d}"
        self.registrations.append(
            {
                "form_id": request["FormId"],
                "process_path_id": request["ProcessPathId"],
                "process_step_id": request["StatusStepId"],
                "fields": {int(k): v for k, v in content.items()},
                "document_external_id": external_id,
            }
        )
        if self.documents is not None:
            self.documents.add(external_id)
        return 200, {"Documents": {"DocumentExternalId": external_id, "DocumentId": str(number)}}

    # -- ASGI -----------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != REST_PATH or scope["method"] != "GET":
            await _respond(send, 404, "text/html; charset=utf-8", "<h1>Not Found</h1>")
            return
        fault = self._faults.pop(0) if self._faults else None
        if fault == "timeout_before":
            raise httpx.ConnectError("CourseSales fake: injected connection failure")
        self.calls += 1
        request = _parse(scope.get("query_string", b""))
        if isinstance(request, dict):
            self.requests.append(request)
        if fault == "500":
            await _respond(send, 500, "text/html; charset=utf-8", "<h1>500 Internal Server Error</h1>")
            return
        if fault == "nonjson":
            await _respond(send, 200, "text/html; charset=utf-8", PHP_FATAL_PAGE)
            return
        status, answer = self.handle(request)
        if fault == "timeout_after":
            raise httpx.ReadTimeout("CourseSales fake: injected timeout after the call was applied")
        await _respond(send, status, "application/json", json.dumps(answer))


def _parse(query_string: bytes) -> Any:
    try:
        return json.loads(unquote(query_string.decode("latin-1"), encoding="utf-8"))
    except ValueError:
        return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, content_type: str, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
