"""Hostile input, with and without credentials: always a 4xx with the reason (or Moodle's own error with HTTP 200 on
the Moodle-compatible endpoint), never a 500, and the server keeps serving. Each case was a 500 once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import TEST_TOKENS, make_settings
from tests.fuzz_server import FuzzServer

COMPAT = "/webservice/rest/server.php"
MOODLE = {"Authorization": f"Bearer {TEST_TOKENS['moodle']}"}
COURSESALES = {"Authorization": f"Bearer {TEST_TOKENS['coursesales']}"}
JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000


@pytest.fixture(scope="module")
def server(migrated: str, var_dir: Path) -> Iterator[FuzzServer]:
    with FuzzServer(make_settings(migrated, var_dir)) as srv:
        yield srv


@pytest.fixture
def http(server: FuzzServer) -> Iterator[httpx.Client]:
    before = server.error_count
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client
        assert client.get("/healthz").status_code == 200, "the server stopped serving"
    assert server.errors_since(before) == []


def _completion(**overrides: Any) -> dict[str, Any]:
    event = {
        "eventname": "\\core\\event\\course_completed",
        "objectid": "2",
        "courseid": "11",
        "relateduserid": "5010",
        "userid": "2",
        "timecreated": 1795608984,
    }
    event.update(overrides)
    return event


def _compat(form: str, fmt: str = "json") -> str:
    return f"wstoken={TEST_TOKENS['compat']}&wsfunction=core_user_create_users&moodlewsrestformat={fmt}&{form}"


def _user(index: str = "0", **fields: str) -> str:
    base = {
        "username": "hostile@example.com",
        "password": "S3cret!pass",
        "firstname": "Hos",
        "lastname": "Tile",
        "email": "hostile@example.com",
    }
    base.update(fields)
    return "&".join(f"users[{index}][{k}]={quote(v)}" for k, v in base.items())


# -- before authentication -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT.encode(), b"\xff\xfe", b'{"token": "\\ud800"}'])
def test_unreadable_body_without_credentials_is_401(http: httpx.Client, body: bytes) -> None:
    response = http.post("/webhooks/moodle", content=body, headers=JSON)
    assert response.status_code == 401, response.text


def test_lone_surrogate_token_is_refused(http: httpx.Client) -> None:
    body = json.dumps({**_completion(), "token": "\ud800"})
    response = http.post("/webhooks/moodle", content=body, headers=JSON)
    assert response.status_code == 401, response.text


def test_lone_surrogate_bearer_is_refused(http: httpx.Client) -> None:
    response = http.post("/webhooks/moodle", content=b"{}", headers={**JSON, "Authorization": b"Bearer \xed\xa0\x80"})
    assert response.status_code == 401, response.text


# -- after authentication --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,headers", [("/webhooks/moodle", MOODLE), ("/webhooks/coursesales", COURSESALES)])
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT.encode()])
def test_deeply_nested_body_with_credentials_is_400(http: httpx.Client, url: str, headers: Any, body: bytes) -> None:
    response = http.post(url, content=body, headers={**JSON, **headers})
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["detail"]


def test_nested_extra_field_within_the_parser_limit_is_refused(http: httpx.Client) -> None:
    """Deep enough to pass json.loads, too deep to store and read back safely."""
    body = {"type": "contact.upserted", "id": "deep-1", "extra": json.loads('{"a":' * 500 + "1" + "}" * 500)}
    response = http.post("/webhooks/coursesales", json=body, headers=COURSESALES)
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["detail"]


def test_moodle_other_as_deeply_nested_json_string_is_400(http: httpx.Client) -> None:
    response = http.post("/webhooks/moodle", json=_completion(other=DEEP_OBJECT), headers=MOODLE)
    assert response.status_code == 400, response.text
    assert "other" in response.json()["detail"]


@pytest.mark.parametrize("field", ["relateduserid", "objectid", "courseid", "userid"])
@pytest.mark.parametrize("value", [int("9" * 300), "9" * 300, 2**31, -1])
def test_moodle_ids_beyond_our_columns_are_400(http: httpx.Client, field: str, value: Any) -> None:
    response = http.post(
        "/webhooks/moodle", content=json.dumps(_completion(**{field: value})), headers={**MOODLE, **JSON}
    )
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert field in detail and "9" * 30 not in detail


def test_moodle_largest_id_is_accepted(http: httpx.Client) -> None:
    response = http.post("/webhooks/moodle", json=_completion(relateduserid=2**31 - 1), headers=MOODLE)
    assert response.status_code == 200, response.text


# -- the Moodle-compatible endpoint: Moodle's answers, HTTP 200 ------------------------------------------------------


def _moodle_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errorcode"] == "invalidparameter", body
    return body


@pytest.mark.parametrize("index", ["\u00b2", "\u2460"])
def test_compat_unicode_digit_index_is_read_as_php_does(http: httpx.Client, index: str) -> None:
    """PHP keeps any array key and Moodle reads a list's values whatever their keys: the user is taken."""
    response = http.post(COMPAT, content=_compat(_user(quote(index), username=f"idx{ord(index)}@example.com")))
    assert response.status_code == 200, response.text
    assert response.json()[0]["username"] == f"idx{ord(index)}@example.com"


def test_compat_deeply_nested_key_is_dropped_as_php_drops_it(http: httpx.Client) -> None:
    """PHP's max_input_nesting_level (64) drops a deeper name before Moodle sees it: the field is then missing."""
    form = "&".join(p for p in _user().split("&") if "[firstname]" not in p)
    deep = "".join("[a]" for _ in range(5000))
    body = _moodle_error(http.post(COMPAT, content=_compat(form + f"&users[0][firstname]{deep}=x")))
    assert body["debuginfo"] == (
        "users => Invalid parameter value detected: Missing required key in single structure: firstname"
    )


def test_compat_nested_key_within_phps_limit_is_refused_as_moodle_refuses_it(http: httpx.Client) -> None:
    deep = "".join("[a]" for _ in range(60))
    body = _moodle_error(http.post(COMPAT, content=_compat(_user() + f"&users[0][firstname]{deep}=x")))
    assert body["debuginfo"].startswith("users => Invalid parameter value detected: firstname => ")


def test_compat_array_for_a_string_is_refused_as_moodle_refuses_it(http: httpx.Client) -> None:
    response = http.post(COMPAT, content=_compat(_user() + "&users[0][firstname][0]=x"))
    body = _moodle_error(response)
    assert body["debuginfo"] == (
        "users => Invalid parameter value detected: firstname => Invalid parameter value detected: "
        "Scalar type expected, array or object received."
    )


def test_compat_answers_use_moodles_debuginfo_format(http: httpx.Client) -> None:
    """As recorded (015d): `users => Invalid parameter value detected: Missing required key ...`."""
    form = "&".join(p for p in _user().split("&") if "[firstname]" not in p)
    body = _moodle_error(http.post(COMPAT, content=_compat(form)))
    assert body["debuginfo"] == (
        "users => Invalid parameter value detected: Missing required key in single structure: firstname"
    )


def test_compat_nested_key_in_the_query_string_is_moodles_answer(http: httpx.Client) -> None:
    deep = "".join("[a]" for _ in range(50))
    response = http.get(f"{COMPAT}?{_compat(_user())}&users[0][lastname]{deep}=x")
    assert _moodle_error(response)["debuginfo"].startswith("users => Invalid parameter value detected: lastname")


@pytest.mark.parametrize("url", ["/api/pause", "/api/links/users", "/api/reconcile"])
def test_deeply_nested_ops_body_is_4xx(http: httpx.Client, url: str) -> None:
    ops = {"Authorization": f"Bearer {TEST_TOKENS['api']}"}
    response = http.post(url, content=DEEP, headers={**JSON, **ops})
    assert 400 <= response.status_code < 500, response.text
