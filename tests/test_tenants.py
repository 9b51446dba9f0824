"""The tenant registry (issue 20, tenants as data): /api/tenants for the hub token alone, `moodle-sync tenants`,
secrets encrypted at rest and never echoed, a credential never serving two tenants (nor equal to the file's),
config keys exactly as sync.toml, a tenant's Settings over the hub's, and `check --tenant` against the Moodle fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlmodel import col

from app.db.models import AuditEntry
from app.db.tenants import Tenant, TenantCredential
from app.runtime import Runtime
from app.settings import Settings
from app.sync import tenants as rules
from app.tenant_settings import build_settings, tenant_settings
from tests.conftest import TEST_TOKENS, bearer, make_settings

ROOT = Path(__file__).resolve().parent.parent
HUB_TOKEN = "hub-token-for-the-tenant-tests"
HUB = {"Authorization": f"Bearer {HUB_TOKEN}"}
PUBLIC_URL = "https://sync.example.org"
SECRETS = {
    "MOODLE__TOKEN": "acme-moodle-token-0001",
    "COURSESALES__PASSWORD": "acme-soap-password",
    "WEBHOOKS__COURSESALES_TOKEN": "acme-coursesales-token-0001",
    "COMPAT__WSTOKEN": "acme-compat-wstoken-0001",
    "API__TOKEN": "acme-api-token-000000001",
}
CONFIG = {
    "moodle": {"url": "https://moodle.acme.example", "max_batch": 50},
    "coursesales": {"url": "https://acme.coursesales.com", "username": "AcmeSoap"},
    "courses": {"timezone": "Australia/Brisbane"},
}


@pytest.fixture
def settings(migrated: str, var_dir: Path) -> Settings:
    return make_settings(migrated, var_dir, hub={"token": SecretStr(HUB_TOKEN), "public_url": PUBLIC_URL})


def acme(**changes: Any) -> dict[str, Any]:
    return {"slug": "acme", "name": "Acme Training", "config": CONFIG, "secrets": SECRETS, **changes}


def assert_no_secret(answer: str, *values: str) -> None:
    for value in (*SECRETS.values(), *values):
        assert value not in answer


async def test_the_api_round_trip(client: httpx.AsyncClient, runtime: Runtime) -> None:
    said: list[str] = []

    async def call(method: str, url: str, status: int, **kw: Any) -> Any:
        r = await client.request(method, url, headers=HUB, **kw)
        said.append(r.text)
        assert r.status_code == status, r.text
        return r.json()

    made = await call("POST", "/api/tenants", 201, json=acme())
    assert made["slug"] == "acme" and made["name"] == "Acme Training" and made["enabled"] is True
    assert made["source"] == "registry" and made["config"] == CONFIG
    assert made["secrets"] == sorted(SECRETS)
    assert made["urls"] == {
        "coursesales_webhook": f"{PUBLIC_URL}/t/acme/webhooks/coursesales",
        "moodle_webhook": f"{PUBLIC_URL}/t/acme/webhooks/moodle",
        "compat": f"{PUBLIC_URL}/t/acme/webservice/rest/server.php",
    }
    listed = await call("GET", "/api/tenants", 200)
    assert listed["total"] == 2 and [t["slug"] for t in listed["items"]] == ["default", "acme"]
    default = listed["items"][0]
    assert default["source"] == "file" and default["config"] is None
    assert default["urls"]["compat"] == f"{PUBLIC_URL}/webservice/rest/server.php"
    assert "API__TOKEN" in default["secrets"] and "MOODLE__TOKEN" in default["secrets"]
    assert (await call("GET", "/api/tenants?offset=1&limit=1", 200))["items"][0]["slug"] == "acme"
    assert (await call("GET", "/api/tenants/acme", 200))["config"] == CONFIG

    patched = await call(
        "PATCH",
        "/api/tenants/acme",
        200,
        json={
            "name": "Acme Training Ltd",
            "config": {"moodle": {"url": "https://lms.acme.example", "max_batch": None}, "enrolments": {"role_id": 9}},
            "secrets": {"COURSESALES__PASSWORD": None, "API__READ_TOKEN": "acme-read-token-00000001"},
        },
    )
    assert patched["name"] == "Acme Training Ltd"
    assert patched["config"] == {
        "moodle": {"url": "https://lms.acme.example"},  # max_batch back to its default
        "coursesales": CONFIG["coursesales"],
        "courses": CONFIG["courses"],
        "enrolments": {"role_id": 9},
    }
    assert "COURSESALES__PASSWORD" not in patched["secrets"] and "API__READ_TOKEN" in patched["secrets"]

    assert (await call("POST", "/api/tenants/acme/disable", 200))["enabled"] is False
    assert (await call("GET", "/api/tenants/acme", 200))["enabled"] is False
    assert (await call("POST", "/api/tenants/acme/enable", 200))["enabled"] is True
    await call("PATCH", "/api/tenants/default", 409, json={"name": "x"})
    await call("GET", "/api/tenants/nobody", 404)
    await call("PATCH", "/api/tenants/nobody", 404, json={"name": "x"})

    assert "confirm" in (await call("DELETE", "/api/tenants/acme", 422))["detail"]
    await call("DELETE", "/api/tenants/acme?confirm=acm", 422)
    assert await call("DELETE", "/api/tenants/acme?confirm=acme", 200) == {"deleted": "acme"}
    await call("GET", "/api/tenants/acme", 404)
    assert (await call("GET", "/api/tenants", 200))["total"] == 1
    async with runtime.sessions() as s:
        assert (await s.execute(select(TenantCredential))).first() is None
        trail = list((await s.execute(select(AuditEntry).order_by(col(AuditEntry.id)))).scalars())
    assert [(a.actor, a.action, a.target) for a in trail] == [
        ("hub", "tenant.add", "tenant:acme"),
        ("hub", "tenant.update", "tenant:acme"),
        ("hub", "tenant.disable", "tenant:acme"),
        ("hub", "tenant.enable", "tenant:acme"),
        ("hub", "tenant.remove", "tenant:acme"),
    ]
    assert "secrets set: API__READ_TOKEN" in (trail[1].note or "") and "moodle.url" in (trail[1].note or "")
    assert_no_secret(" ".join(said) + " ".join(str(a.note) for a in trail), "acme-read-token-00000001")


async def test_secrets_are_encrypted_at_rest_and_found_by_keyed_hash(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await client.post("/api/tenants", headers=HUB, json=acme())).status_code == 201
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(text("SELECT config, secrets FROM tenants WHERE slug = 'acme'"))).one()
        digests = (await conn.execute(text("SELECT digest, name FROM tenant_credentials"))).all()
    stored = str(row.secrets)
    assert_no_secret(stored)
    async with runtime.sessions() as s:
        tenant = await rules.get_tenant(s, "acme")
        assert {n: runtime.vault.decrypt(v) for n, v in tenant.secrets.items()} == SECRETS
        found = await rules.find_by_credential(s, runtime.vault, SECRETS["COMPAT__WSTOKEN"], names={"COMPAT__WSTOKEN"})
        assert found is not None and found[0].slug == "acme" and found[1] == "COMPAT__WSTOKEN"
        # A credential of another kind does not pass for this one, nor does an unknown value.
        assert (
            await rules.find_by_credential(s, runtime.vault, SECRETS["API__TOKEN"], names={"COMPAT__WSTOKEN"}) is None
        )
        assert await rules.find_by_credential(s, runtime.vault, "no-such-token-at-all", names={"API__TOKEN"}) is None
    # Passwords are no tenant's name: not registered; every digest is a keyed hash, never the value.
    assert sorted(n for _, n in digests) == sorted(set(SECRETS) - {"COURSESALES__PASSWORD"})
    assert_no_secret(" ".join(d for d, _ in digests))


async def test_a_credential_serves_one_tenant_only(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/tenants", headers=HUB, json=acme())).status_code == 201
    other = {"slug": "beta", "name": "Beta"}
    taken = [
        {"API__TOKEN": SECRETS["API__TOKEN"]},  # acme's
        {"WEBHOOKS__MOODLE_TOKEN": SECRETS["COMPAT__WSTOKEN"]},  # acme's, under another name
        {"API__TOKEN": TEST_TOKENS["api"]},  # the file configuration's ops token
        {"COMPAT__WSTOKEN": TEST_TOKENS["compat"]},
        {"WEBHOOKS__COURSESALES_TOKEN": HUB_TOKEN},  # the hub's own
    ]
    for secrets in taken:
        r = await client.post("/api/tenants", headers=HUB, json={**other, "secrets": secrets})
        assert r.status_code == 409, r.text
        (name,) = secrets
        assert r.json()["detail"] == f"secrets.{name} is already in use (by another tenant or the file configuration)"
        assert_no_secret(r.text, TEST_TOKENS["api"], TEST_TOKENS["compat"], HUB_TOKEN)
    assert (await client.post("/api/tenants", headers=HUB, json={**other, "secrets": {}})).status_code == 201
    r = await client.patch("/api/tenants/beta", headers=HUB, json={"secrets": {"API__TOKEN": SECRETS["API__TOKEN"]}})
    assert r.status_code == 409 and "secrets.API__TOKEN" in r.json()["detail"]
    assert (await client.post("/api/tenants", headers=HUB, json=acme(secrets={}))).status_code == 409  # the slug
    # A tenant keeps its own values through an update of something else.
    assert (await client.patch("/api/tenants/acme", headers=HUB, json={"secrets": SECRETS})).status_code == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"config": {"moodle": {"urll": "https://m.example"}}}, "config.moodle.urll is not a setting; did you mean config.moodle.url?"),
        ({"config": {"moodel": {}}}, "config.moodel is not a tenant's section; did you mean config.moodle?"),
        ({"config": {"jobs": {"lease_seconds": 5}}}, "config.jobs is the hub's: a tenant cannot set it"),
        ({"config": {"database_url": "postgresql://x"}}, "config.database_url is the hub's"),
        ({"config": {"moodle": {"token": "acme-moodle-token-0001"}}}, "config.moodle.token is a secret: give it in secrets as MOODLE__TOKEN"),
        ({"config": {"moodle": {"url": "moodle.acme.example"}}}, "config.moodle.url: Value error, 'moodle.acme.example' is not a URL"),
        ({"config": {"enrolments": {"unenrol_action": "drop"}}}, "config.enrolments.unenrol_action: Input should be"),
        ({"secrets": {"MOODLE_TOKEN": "acme-moodle-token-0001"}}, "secrets.MOODLE_TOKEN is not a tenant's secret; did you mean secrets.MOODLE__TOKEN?"),
        ({"secrets": {"API__TOKEN": "short-token"}}, "secrets.API__TOKEN is shorter than 16 characters"),
        ({"secrets": {"API__TOKEN": "changeme"}}, "secrets.API__TOKEN is empty or a placeholder"),
        ({"secrets": {"COMPAT__WSTOKEN": "<SYNC_COMPAT__WSTOKEN>"}}, "secrets.COMPAT__WSTOKEN is empty or a placeholder"),
        ({"secrets": {"WEBHOOKS__MOODLE_SECRET": "whsec_c2hvcnQ="}}, "secrets.WEBHOOKS__MOODLE_SECRET decodes to 5 bytes"),
        ({"secrets": {"API__TOKEN": "acme-api-token-000000001", "API__READ_TOKEN": "acme-api-token-000000001"}}, "secrets.API__READ_TOKEN holds the same value as secrets.API__TOKEN"),
        ({"secrets": {"API__TOKEN": 1234567890123456789}}, "secrets.API__TOKEN must be a string"),
        ({"secrets": "API__TOKEN=acme-api-token-000000001"}, "secrets: Input should be a valid dictionary"),
        ({"slug": "default"}, "slug: 'default' is the file/environment configuration's"),
        ({"slug": "Acme_Training"}, "slug: 1 to 40 characters of a-z 0-9 -"),
        ({"slug": "a" * 41}, "slug: 1 to 40 characters"),
        ({"name": "  "}, "name: 1 to 200 characters"),
    ],
)  # fmt: skip
async def test_bad_input_is_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], detail: str
) -> None:
    r = await client.post("/api/tenants", headers=HUB, json={"slug": "acme", "name": "Acme", **body})
    assert r.status_code == 422, r.text
    assert detail in r.json()["detail"]
    assert_no_secret(r.text, "short-token", "1234567890123456789", "whsec_c2hvcnQ=")
    assert (await client.get("/api/tenants/acme", headers=HUB)).status_code == 404  # nothing written


async def test_the_hub_token_alone_opens_the_registry(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.api = runtime.settings.api.model_copy(update={"read_token": SecretStr("read-token-for-tests-1")})
    for headers in ({}, bearer("api"), {"Authorization": "Bearer read-token-for-tests-1"}, {"Authorization": "Bearer nope"}):  # fmt: skip
        for method, url in (("GET", "/api/tenants"), ("POST", "/api/tenants"), ("DELETE", "/api/tenants/acme")):
            r = await client.request(method, url, headers=headers, json=acme())
            assert r.status_code == 401, (headers, method, r.text)
    # The rest of /api: the hub token acts on one tenant, named by ?tenant= (app.api.tenant_routing).
    r = await client.get("/api/events", headers=HUB)
    assert r.status_code == 400 and "?tenant=SLUG" in r.json()["detail"]
    assert (await client.get("/api/events?tenant=nope", headers=HUB)).status_code == 404
    assert (await client.get("/api/events?tenant=default", headers=HUB)).status_code == 200
    # An unset hub token matches nothing.
    runtime.settings.hub = runtime.settings.hub.model_copy(update={"token": None})
    assert (await client.get("/api/tenants", headers=HUB)).status_code == 401


def test_a_tenants_settings_over_the_hubs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runtime: Runtime
) -> None:
    monkeypatch.setenv("SYNC_MOODLE__TOKEN", "the-environment-moodle-token")
    config = tmp_path / "sync.toml"
    config.write_text('[coursesales]\nurl = "https://file.coursesales.com"\n')
    monkeypatch.setenv("SYNC_CONFIG", str(config))
    built = build_settings(settings, {"moodle": {"url": "https://moodle.acme.example"}}, {"API__TOKEN": "acme-api-token-000000001"})  # fmt: skip
    assert settings.moodle.url != built.moodle.url == "https://moodle.acme.example"
    # The tenant's own sections start from the defaults: never the file's, the environment's or the base's.
    assert built.coursesales.url == "" and built.moodle.token.get_secret_value() == ""
    assert built.webhooks.coursesales_token is None and built.compat.wstoken is None
    assert built.api.token is not None and built.api.token.get_secret_value() == "acme-api-token-000000001"
    # The hub's own: the process-wide settings, whatever the tenant says.
    assert (built.database_url, built.redis_url, built.var_dir) == (settings.database_url, settings.redis_url, settings.var_dir)  # fmt: skip
    assert built.secret_key == settings.secret_key and built.api.max_body_bytes == settings.api.max_body_bytes
    assert built.hub.token == settings.hub.token and built.jobs == settings.jobs
    tenant = Tenant(slug="acme", name="Acme", config=CONFIG, secrets={"MOODLE__TOKEN": runtime.vault.encrypt("mt-1")})
    through = tenant_settings(settings, tenant, vault=runtime.vault)
    assert through.moodle.url == CONFIG["moodle"]["url"] and through.moodle.max_batch == 50
    assert through.moodle.token.get_secret_value() == "mt-1" and through.courses.timezone == "Australia/Brisbane"


# -- the command line -------------------------------------------------------------------------------------------


def cli(runtime: Runtime, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SYNC_MODE": "test",
        "SYNC_DATABASE_URL": runtime.settings.effective_database_url,
        "SYNC_SECRET_KEY": TEST_TOKENS["secret_key"],
        "SYNC_API__TOKEN": TEST_TOKENS["api"],
        "SYNC_HUB__PUBLIC_URL": PUBLIC_URL,
        "SYNC_CONFIG": str(ROOT / "no-such-config.toml"),
        "COLUMNS": "200",
    }
    return subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
        [sys.executable, "-m", "app.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def test_the_command_line_round_trip(runtime: Runtime, tmp_path: Path) -> None:
    said: list[str] = []

    def run(*args: str, stdin: str = "", status: int = 0) -> str:
        done = cli(runtime, "tenants", *args, stdin=stdin)
        said.append(done.stdout + done.stderr)
        assert done.returncode == status, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stdout + done.stderr

    config = tmp_path / "acme.toml"
    config.write_text('[moodle]\nurl = "https://moodle.acme.example"\n\n[courses]\ntimezone = "Australia/Brisbane"\n')
    lines = "# acme's credentials\n" + "".join(f"{k}={v}\n" for k, v in SECRETS.items())
    added = run("add", "acme", "--name", "Acme Training", "--config", str(config), stdin=lines)
    view = json.loads(added[: added.rindex("}") + 1])
    assert view["config"]["moodle"] == {"url": "https://moodle.acme.example"} and view["secrets"] == sorted(SECRETS)
    assert view["urls"]["compat"] == f"{PUBLIC_URL}/t/acme/webservice/rest/server.php"
    assert "tenant acme added" in added
    listed = " ".join(run("list").split())
    assert "default" in listed and "acme" in listed and "Acme Training" in listed

    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("COURSESALES__PASSWORD=\nAPI__READ_TOKEN=acme-read-token-00000001\n")
    run("update", "acme", "--name", "Acme Ltd", "--secrets-file", str(secrets_file))
    shown = json.loads(run("show", "acme"))
    assert shown["name"] == "Acme Ltd" and "COURSESALES__PASSWORD" not in shown["secrets"]
    assert "API__READ_TOKEN" in shown["secrets"]
    assert json.loads(run("show", "default"))["source"] == "file"

    # Refusals: one line each naming the field, non-zero, nothing written.
    bad = tmp_path / "bad.toml"
    bad.write_text('[moodle]\nurll = "https://x.example"\n')
    assert "config.moodle.urll is not a setting; did you mean config.moodle.url?" in run("update", "acme", "--config", str(bad), status=1)  # fmt: skip
    reused = f"API__TOKEN={SECRETS['API__TOKEN']}\n"
    assert "secrets.API__TOKEN is already in use" in run("add", "beta", "--name", "Beta", stdin=reused, status=1)
    assert "secrets line 1: write NAME=VALUE" in run("add", "beta", "--name", "Beta", stdin="just-a-token\n", status=1)
    assert "no tenant nobody" in run("show", "nobody", status=1)

    assert "tenant acme disabled" in run("disable", "acme")
    assert json.loads(run("show", "acme"))["enabled"] is False
    assert "tenant acme enabled" in run("enable", "acme")
    assert "confirm" in run("remove", "acme", "--confirm", "beta", status=1)
    assert "tenant acme removed" in run("remove", "acme", "--confirm", "acme")
    assert "no tenant acme" in run("show", "acme", status=1)
    assert_no_secret(" ".join(said), "acme-read-token-00000001", "just-a-token")


async def test_check_a_tenants_upstreams(runtime: Runtime, served_moodle: Any, moodle_fake: Any) -> None:
    moodle_fake.add_function("core_enrol_get_users_courses")
    good = {"moodle": {"url": served_moodle.url}}
    async with runtime.sessions() as s:
        for slug, token in (("acme", "test-token"), ("beta", "a-wrong-moodle-token")):
            await rules.add(s, runtime.vault, Settings(mode="test", secret_key=runtime.settings.secret_key),
                            slug=slug, name=slug, config=good, secrets={"MOODLE__TOKEN": token}, actor="test")  # fmt: skip
        await rules.add(s, runtime.vault, runtime.settings, slug="gamma", name="gamma", config={}, secrets={}, actor="test")  # fmt: skip
        await s.commit()
    ok = cli(runtime, "check", "--tenant", "acme")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Moodle 4.3" in ok.stderr and "token user 'syncbot'" in ok.stderr  # the tenant's Moodle took its token
    assert "CourseSales is not configured" in ok.stderr + ok.stdout
    refused = cli(runtime, "check", "--tenant", "beta")
    assert refused.returncode == 1 and "error" in refused.stderr + refused.stdout
    unset = cli(runtime, "check", "--tenant", "gamma")
    assert unset.returncode == 1 and "tenant gamma's moodle.url and MOODLE__TOKEN" in unset.stderr
    unknown = cli(runtime, "check", "--tenant", "nobody")
    assert unknown.returncode == 1 and "no tenant nobody" in unknown.stderr
    assert "a-wrong-moodle-token" not in refused.stdout + refused.stderr
