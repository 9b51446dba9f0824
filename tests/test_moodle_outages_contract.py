"""Contract tests for recordings 150-158 (deleted users, suspended token user, maintenance) on both Moodle lines.

They were recorded on a second site (other user ids, site name and service; on 4.3 a token that sees full names),
so tests/test_moodle_contract.py cannot replay them in order. Here the fake is put in the recorded state through
its controls (``delete_user``, ``suspend_token_user``, ``maintenance``, ``remove_function``), the recorded request is
sent as raw HTTP (the recorded user id swapped for the fake's), and the answer must match the recording in all that
does not depend on ids or the clock: HTTP status, headers, content type, exception class, errorcode, message,
warnings, the keys present and their order, the deleted user's ``<email>.<digits>`` username and md5 email.
The last test shows what app.moodle.client.MoodleClient raises for these states.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio

from app.moodle.client import MoodleClient
from app.moodle.errors import (
    MoodleAuthError,
    MoodleError,
    MoodleInvalidParameter,
    MoodleRecordMissing,
    MoodleTransientError,
)
from tests.fakes.moodle import MoodleFake
from tests.test_moodle_contract import BASE_URL, LINES, SECOND_SITE_FROM, load, normalise, recording_number

CASES = {
    150: "150_get_users_by_field_id_deleted_user",
    151: "151_get_users_by_field_username_deleted_user",
    152: "152_get_users_by_field_email_deleted_user",
    153: "153_enrol_users_deleted_user",
    154: "154_update_users_deleted_user",
    155: "155_get_enrolled_users_after_user_deleted",
    156: "156_error_token_user_suspended",
    157: "157_error_cli_maintenance_mode",
    158: "158_site_info_after_maintenance",
}
TEMPLATE_COURSE = 2  # TEMPLATE-101: id 2 on both recorded sites and in the fake
STUDENT = 5
# The deletion time at the end of a deleted user's username ("<email>.<timestamp>").
DELETION_STAMP = re.compile(r"\.\d+$")
# Set up differently on the second site, not behaviour: PHP's upload limit (64 MB there, 2 MB on the first: 001).
SITE_SETTINGS = frozenset({"usermaxuploadfilesize"})


def recording(line: str, number: int) -> dict[str, Any]:
    return load(LINES[line] / f"{CASES[number]}.json")


@dataclass
class Site:
    line: str
    fake: MoodleFake
    http: httpx.AsyncClient

    async def send(self, rec: dict[str, Any], swap: dict[str, str] | None = None) -> httpx.Response:
        """The recorded request, raw, with the fake's token and the values in ``swap`` (recorded -> fake) replaced."""
        swap = {"<TOKEN>": self.fake.token, **(swap or {})}
        form = [(k, swap.get(str(v), str(v))) for k, v in rec["request"].items()]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return await self.http.request(rec["method"], rec["url"], content=urlencode(form).encode(), headers=headers)

    async def call(self, function: str, form: dict[str, Any], token: str | None = None) -> httpx.Response:
        data = {"wstoken": self.fake.token if token is None else token, "wsfunction": function, **form}
        return await self.http.post("/webservice/rest/server.php?moodlewsrestformat=json", data=data)

    async def ok(self, function: str, form: dict[str, Any]) -> Any:
        resp = await self.call(function, form)
        answer = resp.json()
        assert resp.status_code == 200 and not (isinstance(answer, dict) and "exception" in answer), resp.text
        return answer


@pytest_asyncio.fixture(params=sorted(LINES))
async def site(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    fake = MoodleFake(request.param, viewfullnames=True)  # the second site's 4.3 token saw full names (150)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake), base_url=BASE_URL) as http:
        yield Site(request.param, fake, http)


# -- comparing an answer with a recording ---------------------------------------------------------------------------


def comparable(value: Any, user_id: int | None) -> Any:
    """``value`` without what depends on the site's ids or the clock: the deleted user's id and deletion time."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("id", "itemid") and user_id is not None and item == user_id:
                item = "<deleted user id>"
            elif key == "username" and isinstance(item, str):
                item = DELETION_STAMP.sub(".<timestamp>", item)
            out[key] = comparable(item, user_id)
        return out
    if isinstance(value, list):
        return [comparable(v, user_id) for v in value]
    return value


def assert_matches(
    resp: httpx.Response,
    rec: dict[str, Any],
    *,
    user_id: int | None = None,
    recorded_user_id: int | None = None,
    ignore: frozenset[str] = frozenset(),
) -> None:
    """Status, content type, recorded headers (and no Retry-After unless recorded) and the body, key order included."""
    assert resp.status_code == rec["http_status"]
    assert resp.headers["content-type"] == rec["content_type"]
    recorded_headers = rec.get("headers", {})
    for name, value in recorded_headers.items():
        assert resp.headers.get(name) == value, name
    if "retry-after" not in recorded_headers:
        assert "retry-after" not in resp.headers
    if not rec["content_type"].startswith("application/json"):
        assert resp.text == rec["response"]
        return
    got = json.dumps(comparable(normalise(resp.json(), ignore), user_id), indent=1)
    want = json.dumps(comparable(normalise(rec["response"], ignore), recorded_user_id), indent=1)
    assert got == want


# -- 150-155: a deleted user ----------------------------------------------------------------------------------------


@dataclass
class DeletedUser:
    uid: int  # in the fake
    recorded_uid: int  # on the recorded site
    username: str  # before the deletion
    email: str

    @property
    def swap(self) -> dict[str, str]:
        return {str(self.recorded_uid): str(self.uid)}


async def deleted_user(site: Site) -> DeletedUser:
    """The recorder's set-up: a user with the recorded username, names and email (150-152), enrolled as a student in
    the template course (155), then deleted as Moodle deletes (core_user_delete_users / an admin)."""
    recorded = recording(site.line, 150)["response"][0]
    username = recording(site.line, 151)["request"]["values[0]"]
    email = recording(site.line, 152)["request"]["values[0]"]
    user = {"username": username, "password": "Passw0rd!", "firstname": recorded["firstname"]}
    user |= {"lastname": recorded["lastname"], "email": email}
    created = await site.ok("core_user_create_users", {f"users[0][{k}]": v for k, v in user.items()})
    uid = created[0]["id"]
    enrolment = {"roleid": STUDENT, "userid": uid, "courseid": TEMPLATE_COURSE}
    await site.ok("enrol_manual_enrol_users", {f"enrolments[0][{k}]": v for k, v in enrolment.items()})
    # Before the delete the same lookups find it (so the empty answers below are not vacuous).
    for field, value in (("id", uid), ("username", username), ("email", email)):
        found = await site.ok("core_user_get_users_by_field", {"field": field, "values[0]": value})
        assert [u["username"] for u in found] == [username]
    assert [u["id"] for u in await site.ok("core_enrol_get_enrolled_users", {"courseid": TEMPLATE_COURSE})] == [uid]
    site.fake.delete_user(uid)
    recorded_uid = int(recording(site.line, 150)["request"]["values[0]"])
    return DeletedUser(uid=uid, recorded_uid=recorded_uid, username=username, email=email)


async def test_150_deleted_user_is_still_found_by_id_renamed(site: Site) -> None:
    gone = await deleted_user(site)
    rec = recording(site.line, 150)
    resp = await site.send(rec, gone.swap)
    assert_matches(resp, rec, user_id=gone.uid, recorded_user_id=gone.recorded_uid)
    (answer,) = resp.json()
    assert answer["id"] == gone.uid
    assert re.fullmatch(re.escape(gone.email) + r"\.\d+", answer["username"])
    assert re.fullmatch(r"[0-9a-f]{32}", answer["email"])
    # md5 of the old username (lib/moodlelib.php delete_user()): the same value as recorded, for the same username.
    md5 = hashlib.md5(gone.username.encode()).hexdigest()  # noqa: S324 - Moodle's choice, checked not used
    assert answer["email"] == md5 == rec["response"][0]["email"]
    assert "deleted" not in answer and answer["suspended"] is False
    assert site.fake.users[gone.uid]["deleted"] is True  # internal only


@pytest.mark.parametrize("number", [151, 152])
async def test_151_152_deleted_user_is_not_found_by_old_username_or_email(site: Site, number: int) -> None:
    gone = await deleted_user(site)
    rec = recording(site.line, number)
    assert_matches(await site.send(rec, gone.swap), rec)
    assert rec["response"] == []


async def test_153_enrolling_a_deleted_user_is_refused(site: Site) -> None:
    gone = await deleted_user(site)
    rec = recording(site.line, 153)
    assert_matches(await site.send(rec, gone.swap), rec)
    v5 = ("core\\exception\\moodle_exception", "userdeleted")
    want = ("coding_exception", "codingerror") if site.line == "4.3" else v5
    assert (rec["response"]["exception"], rec["response"]["errorcode"]) == want
    assert (gone.uid, TEMPLATE_COURSE) not in site.fake.enrolments


async def test_154_updating_a_deleted_user_is_a_warning_and_changes_nothing(site: Site) -> None:
    gone = await deleted_user(site)
    before = dict(site.fake.users[gone.uid])
    rec = recording(site.line, 154)
    assert_matches(await site.send(rec, gone.swap), rec, user_id=gone.uid, recorded_user_id=gone.recorded_uid)
    assert [w["warningcode"] for w in rec["response"]["warnings"]] == ["usernotupdateddeleted"]
    assert site.fake.users[gone.uid] == before


async def test_155_deleted_user_is_no_longer_enrolled(site: Site) -> None:
    gone = await deleted_user(site)
    rec = recording(site.line, 155)
    assert_matches(await site.send(rec, gone.swap), rec)
    assert not [key for key in site.fake.enrolments if key[0] == gone.uid]


# -- 156: the token's own user suspended ----------------------------------------------------------------------------


async def test_156_suspended_token_user_refuses_every_call(site: Site) -> None:
    rec = recording(site.line, 156)
    site.fake.suspend_token_user()
    assert_matches(await site.send(rec), rec)
    # Every call, whatever the function (even one outside the service, or none): the account is checked first.
    for function, form in (
        ("core_user_get_users_by_field", {"field": "id", "values[0]": "3"}),
        ("core_user_create_users", {"users[0][username]": "ct_x"}),
        ("core_user_delete_users", {"userids[0]": "4"}),
        ("", {}),
    ):
        resp = await site.call(function, form)
        assert (resp.status_code, resp.json()) == (200, rec["response"]), function
    assert site.fake.state.next_ids["user"] == 4, "nothing was created"
    # A wrong token is still a wrong token.
    assert (await site.call("core_webservice_get_site_info", {}, token="nope")).json()["errorcode"] == "invalidtoken"
    site.fake.suspend_token_user(False)
    assert (await site.ok("core_webservice_get_site_info", {}))["username"] == "syncbot"


# -- 157, 158: CLI maintenance mode ---------------------------------------------------------------------------------


async def test_157_maintenance_answers_503_html_to_every_request(site: Site) -> None:
    rec = recording(site.line, 157)
    site.fake.sitename = recording(site.line, 158)["response"]["sitename"]  # the page names the site
    site.fake.maintenance()
    assert_matches(await site.send(rec), rec)  # the whole page, byte for byte
    assert rec["http_status"] == 503 and rec["headers"] == {"retry-after": "300"} and rec["content_type"] == "text/html"
    # Before the token is looked at, for any path; nothing is applied; calls are still logged.
    create = await site.call("core_user_create_users", {"users[0][username]": "ct_x"}, token="nope")
    other_path = await site.http.get("/login/index.php")
    for resp in (create, other_path):
        assert (resp.status_code, resp.headers["retry-after"], resp.text) == (503, "300", rec["response"])
    assert site.fake.state.next_ids["user"] == 4, "nothing was created"
    assert [name for name, _ in site.fake.calls] == ["core_webservice_get_site_info", "core_user_create_users"]


async def test_158_site_info_answers_at_once_after_maintenance(site: Site) -> None:
    rec = recording(site.line, 158)
    site.fake.sitename = rec["response"]["sitename"]
    site.fake.functions = [f["name"] for f in rec["response"]["functions"]]  # the second site's service
    site.fake.maintenance()
    assert (await site.send(rec)).status_code == 503
    site.fake.maintenance(False)
    assert_matches(await site.send(rec), rec, ignore=SITE_SETTINGS)


# -- a function taken out of the service ----------------------------------------------------------------------------


async def test_removed_function_answers_like_a_function_outside_the_service(site: Site) -> None:
    outside = load(LINES[site.line] / "004_error_function_not_in_service.json")["response"]
    assert (await site.call("core_user_get_users_by_field", {"field": "id", "values[0]": "3"})).status_code == 200
    site.fake.remove_function("core_user_get_users_by_field")
    resp = await site.call("core_user_get_users_by_field", {"field": "id", "values[0]": "3"})
    assert (resp.status_code, resp.headers["content-type"], resp.json()) == (200, "application/json", outside)
    listed = [f["name"] for f in (await site.ok("core_webservice_get_site_info", {}))["functions"]]
    assert "core_user_get_users_by_field" not in listed
    with pytest.raises(ValueError, match="not in the external service"):
        site.fake.remove_function("core_user_get_users_by_field")
    site.fake.add_function("core_user_get_users_by_field")
    assert (await site.call("core_user_get_users_by_field", {"field": "id", "values[0]": "3"})).status_code == 200


@pytest.mark.parametrize("line", sorted(LINES))
def test_every_second_site_recording_is_checked_here(line: str) -> None:
    """tests/test_moodle_contract.py skips recordings from SECOND_SITE_FROM on: each of them must be one of CASES."""
    calls = [p for p in LINES[line].glob("*.json") if not p.name.startswith("event_")]
    skipped = sorted(p.stem for p in calls if recording_number(p) >= SECOND_SITE_FROM)
    assert skipped == sorted(CASES.values())


# -- what the project's client makes of these answers ---------------------------------------------------------------


async def test_client_errors_for_deleted_user_suspended_token_user_and_maintenance(site: Site) -> None:
    gone = await deleted_user(site)
    client = MoodleClient(site.http, url=BASE_URL, token=site.fake.token)
    enrolment = {"roleid": STUDENT, "userid": gone.uid, "courseid": TEMPLATE_COURSE}

    # 153: 4.3 refuses in role_assign() (codingerror), 5.0 in require_active_user() (userdeleted).
    expected: tuple[type[MoodleError], str] = (
        (MoodleInvalidParameter, "codingerror") if site.line == "4.3" else (MoodleRecordMissing, "userdeleted")
    )
    with pytest.raises(MoodleError) as enrol:
        await client.call("enrol_manual_enrol_users", {"enrolments": [enrolment]})
    assert (type(enrol.value), enrol.value.errorcode) == expected
    (item,) = await client.enrol_users([enrolment])
    assert (type(item.error), item.error.errorcode if item.error else None) == expected

    # 154: no exception; the warning comes back by user id.
    warnings = await client.update_users([{"id": gone.uid, "firstname": "Back"}])
    assert warnings[gone.uid]["warningcode"] == "usernotupdateddeleted"

    # 156: the token cannot be used (MoodleAuthError), not transient.
    site.fake.suspend_token_user()
    with pytest.raises(MoodleError) as suspended:
        await client.site_info()
    # A token problem, not a data problem: the upstream cannot be used (app.sync.upstreams), never split per item.
    assert type(suspended.value) is MoodleAuthError and not suspended.value.transient
    assert (suspended.value.errorcode, suspended.value.status) == ("wsaccessusersuspended", 200)
    site.fake.suspend_token_user(False)

    # 157: HTTP 503 -> transient, retry_after from the header; no errorcode (an HTML page, not a Moodle error).
    site.fake.maintenance()
    with pytest.raises(MoodleError) as down:
        await client.site_info()
    assert type(down.value) is MoodleTransientError and down.value.transient
    assert (down.value.status, down.value.retry_after, down.value.errorcode) == (503, 300.0, "")
    site.fake.maintenance(False)
    assert (await client.site_info())["username"] == "syncbot"  # 158
