"""/webservice/rest/server.php: what a CourseSales "Moodle" export map sees, answered as Moodle would."""

from __future__ import annotations

import json
from typing import Any

import httpx

from app.runtime import Runtime
from tests.conftest import TEST_TOKENS
from tests.helpers import events, moodle_user, process_all

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "moodle" / "v43"


def export_map_form(**user: str) -> dict[str, str]:
    fields = {
        "username": "jane.doe@example.com",
        "password": "S3cret!pass",
        "firstname": "Jane",
        "lastname": "Doe",
        "email": "jane.doe@example.com",
    }
    fields.update(user)
    form = {"wstoken": TEST_TOKENS["compat"], "wsfunction": "moodle_user_create_users"}
    form.update({f"users[0][{k}]": v for k, v in fields.items()})
    return form


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


async def call(client: httpx.AsyncClient, form: dict[str, str], *, as_json: bool = True) -> httpx.Response:
    url = "/webservice/rest/server.php" + ("?moodlewsrestformat=json" if as_json else "")
    return await client.post(url, data=form)


async def test_wrong_wstoken_json_and_xml_like_moodle(client: httpx.AsyncClient, runtime: Runtime) -> None:
    bad = export_map_form()
    bad["wstoken"] = "nope"
    r = await call(client, bad)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == recorded("002_error_bad_token.json")["response"]
    x = await call(client, bad, as_json=False)
    assert x.status_code == 200 and x.headers["content-type"].startswith("application/xml")
    assert '<EXCEPTION class="moodle_exception">' in x.text and "<ERRORCODE>invalidtoken</ERRORCODE>" in x.text
    missing = {k: v for k, v in bad.items() if k != "wstoken"}
    assert (await call(client, missing)).json()["errorcode"] == "invalidtoken"
    assert await events(runtime) == []


async def test_export_map_creates_user_with_legacy_name(
    client: httpx.AsyncClient, runtime: Runtime, moodle_fake: Any
) -> None:
    r = await call(client, export_map_form())
    assert r.status_code == 200
    assert r.json() == [{"id": 0, "username": "jane.doe@example.com"}]
    event_id = int(r.headers["X-Sync-Event-Id"])
    await process_all(runtime)
    user = moodle_user(moodle_fake, "jane.doe@example.com")
    assert user is not None and user["password"] == "S3cret!pass"
    again = await call(client, export_map_form())
    assert again.json() == [{"id": user["id"], "username": "jane.doe@example.com"}]
    assert int(again.headers["X-Sync-Event-Id"]) == event_id, "a repeated export-map call is the same event"
    changed = await call(client, export_map_form(password="N3w!Passw0rd"))
    assert int(changed.headers["X-Sync-Event-Id"]) != event_id, "a new password is a new event"
    await process_all(runtime)
    assert user["password"] == "N3w!Passw0rd"
    assert len(await events(runtime)) == 2


async def test_xml_success_answer(client: httpx.AsyncClient) -> None:
    form = export_map_form()
    form["wsfunction"] = "core_user_create_users"
    r = await call(client, form, as_json=False)
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n<MULTIPLE>\n<SINGLE>\n')
    assert '<KEY name="username"><VALUE>jane.doe@example.com</VALUE>\n</KEY>' in r.text


async def test_weak_password_is_moodles_own_error(client: httpx.AsyncClient, runtime: Runtime) -> None:
    r = await call(client, export_map_form(password="abc"))
    assert r.json() == recorded("014_create_users_error_weak_password.json")["response"]
    assert await events(runtime) == []


async def test_upper_case_username_is_lower_cased_bad_chars_named(client: httpx.AsyncClient, runtime: Runtime) -> None:
    ok = await call(client, export_map_form(username="Jane.Doe@Example.com"))
    assert ok.json()[0]["username"] == "jane.doe@example.com"
    bad = await call(client, export_map_form(username="jane doe"))
    body = bad.json()
    assert body["errorcode"] == "invalidparameter" and "' '" in body["debuginfo"]


async def test_missing_field_unknown_key_and_function(client: httpx.AsyncClient, runtime: Runtime) -> None:
    form = export_map_form()
    del form["users[0][firstname]"]
    body = (await call(client, form)).json()
    assert body["errorcode"] == "invalidparameter" and "firstname" in body["debuginfo"]
    body = (await call(client, export_map_form(nickname="x"))).json()
    assert "Unexpected keys (nickname)" in body["debuginfo"]
    form = export_map_form()
    form["wsfunction"] = "core_user_delete_users"
    assert (await call(client, form)).json()["errorcode"] == "accessexception"
    del form["wsfunction"]
    assert (await call(client, form)).json()["errorcode"] == "invalidparameter"
    assert await events(runtime) == []


async def test_get_like_moodle(client: httpx.AsyncClient, runtime: Runtime) -> None:
    r = await client.get("/webservice/rest/server.php", params={**export_map_form(), "moodlewsrestformat": "json"})
    assert r.status_code == 200 and r.json()[0]["username"] == "jane.doe@example.com"
