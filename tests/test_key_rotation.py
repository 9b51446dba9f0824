"""Rotating SYNC_SECRET_KEY: the keyring is made on the first open with the keys used so far, a new key opens it
only with the old one in SYNC_SECRET_KEY_PREVIOUS, `rotate-key` wraps it under the new key alone and moves every
encrypted value to a fresh key; deliveries repeated across all of it are still repeats, and stored passwords still
reach Moodle."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import col

from app.crypto import DataKeys, Vault, VaultLocked
from app.db.keyring import DATA, KeyringEntry
from app.db.models import AuditEntry, Event
from app.runtime import Runtime, open_runtime
from app.sync import keyring
from tests.conftest import make_settings
from tests.helpers import events, moodle_user, post_contact, process_all
from tests.procs import ROOT, moodle_sync_command, worker_env
from tests.test_compat_endpoint import call, export_map_form

OLD = "the-key-before-the-rotation-0123456789"
NEW = "the-key-after-the-rotation-9876543210"


@pytest.fixture(autouse=True)
async def keyring_left_for_the_suite(migrated: str, var_dir: Path) -> AsyncIterator[None]:
    """These tests wrap the keyring under keys of their own: the tests after them, and the processes they start with
    the suite's key, find none (the next open makes it again under the suite's key)."""
    yield
    from sqlalchemy import delete

    from app.db.engine import make_engine

    engine = make_engine(migrated)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(KeyringEntry))
    finally:
        await engine.dispose()


async def _open(migrated: str, var_dir: Path, moodle_fake: Any, key: str, previous: str | None = None) -> Runtime:
    settings = make_settings(
        migrated, var_dir, secret_key=SecretStr(key), secret_key_previous=SecretStr(previous) if previous else None
    )
    return await open_runtime(settings, moodle_transport=httpx.ASGITransport(app=moodle_fake))


async def _deliver(rt: Runtime) -> tuple[int, int]:
    """The same two deliveries each time: a CourseSales contact with a password, an export map's user."""
    from tests.conftest import app_client

    async with app_client(rt) as client:
        webhook = await post_contact(client, "rotation-1", contact_id=4321, username="rotated", email="r@example.com")
        export = await call(client, export_map_form(username="compat-rotated", email="c@example.com"))
    assert export.status_code == 200 and "exception" not in export.text, export.text
    return webhook.status_code, len(await events(rt))


async def test_a_rotation_keeps_repeats_repeats_and_secrets_readable(
    migrated: str, var_dir: Path, moodle_fake: Any, clean_db: None
) -> None:
    before = Vault(OLD)  # what an install before the keyring encrypted with
    first = await _open(migrated, var_dir, moodle_fake, OLD)
    try:
        assert first.vault.digest("x") == before.digest("x"), "the keyring keeps the keys used so far"
        status, stored = await _deliver(first)
        assert status in (200, 202) and stored == 2
    finally:
        await first.close()

    during = await _open(migrated, var_dir, moodle_fake, NEW, previous=OLD)
    try:
        status, stored = await _deliver(during)
        assert status in (200, 202) and stored == 2, "repeats during the rotation are repeats"
        async with during.sessions() as s:
            rotated = await keyring.rotate(s, NEW, OLD)
            await s.commit()
        assert rotated.re_encrypted == 2  # both passwords, still waiting in the inbox
    finally:
        await during.close()

    with pytest.raises(keyring.KeyringError, match="SYNC_SECRET_KEY_PREVIOUS"):
        await _open(migrated, var_dir, moodle_fake, OLD)  # the old key alone opens nothing any more

    after = await _open(migrated, var_dir, moodle_fake, NEW)
    try:
        status, stored = await _deliver(after)
        assert status in (200, 202) and stored == 2, "repeats after the rotation are still repeats"
        async with after.sessions() as s:
            secrets = list((await s.execute(select(Event.secret).where(col(Event.secret).is_not(None)))).scalars())
            wrapped = (await s.get_one(KeyringEntry, DATA)).wrapped
        with pytest.raises(ValueError):
            before.decrypt(secrets[0])  # moved to a fresh key: the old one reads none of it
        with pytest.raises(ValueError):
            DataKeys.unwrap(wrapped, OLD)
        await process_all(after)  # the passwords stored before the rotation reach Moodle
        assert moodle_user(moodle_fake, "rotated") is not None
        assert moodle_user(moodle_fake, "compat-rotated") is not None
        assert {e.status for e in await events(after)} == {"done"}
    finally:
        await after.close()


async def test_rotate_key_from_the_command_line(migrated: str, var_dir: Path, moodle_fake: Any, clean_db: None) -> None:
    rt = await _open(migrated, var_dir, moodle_fake, OLD)
    await rt.close()
    env = worker_env(database_url=migrated, redis_url="redis://127.0.0.1:1/0", moodle_url="http://m.invalid",
                     var_dir=var_dir) | {"SYNC_SECRET_KEY": NEW}  # fmt: skip

    def rotate(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (our own CLI)
            [*moodle_sync_command(), "rotate-key"], env=env | extra, cwd=ROOT, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    refused = rotate()
    assert refused.returncode == 1 and "SYNC_SECRET_KEY_PREVIOUS" in refused.stdout + refused.stderr
    assert OLD not in refused.stdout + refused.stderr and NEW not in refused.stdout + refused.stderr
    done = rotate(SYNC_SECRET_KEY_PREVIOUS=OLD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rotate().returncode == 0, "once rotated, the new key alone is enough, and running it again is harmless"
    again = await _open(migrated, var_dir, moodle_fake, NEW)
    try:
        async with again.sessions() as s:
            audit = list((await s.execute(select(AuditEntry).where(col(AuditEntry.action) == "key.rotate"))).scalars())
        assert len(audit) == 2 and all(a.actor.startswith("cli:") for a in audit)
    finally:
        await again.close()


async def test_a_process_started_while_the_database_is_down_opens_its_keyring_once_it_answers(
    migrated: str, var_dir: Path, moodle_fake: Any, clean_db: None
) -> None:
    from app.db.engine import make_engine, make_session_factory
    from tests.conftest import app_client

    down = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none", var_dir, secret_key=SecretStr(OLD))
    rt = await open_runtime(down)
    try:
        assert rt.keyring == "waiting"
        with pytest.raises(VaultLocked):
            rt.vault.digest("anything")  # never a digest under keys that may be the wrong ones
        async with app_client(rt) as client:
            refused = await post_contact(client, "while-down", contact_id=4400, username="early", email="e@x.org")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert (await client.get("/readyz")).status_code == 503
        # The database answers: the retry opens the keyring, with the keys it holds.
        rt.engine = make_engine(migrated)
        rt.sessions = make_session_factory(rt.engine)
        await rt.open_keyring_when_possible(every=0.01)
        assert rt.keyring == "open" and rt.vault.digest("x") == Vault(OLD).digest("x")
    finally:
        await rt.close()


async def test_a_process_whose_key_does_not_open_the_keyring_says_refused_once_the_database_answers(
    migrated: str, var_dir: Path, moodle_fake: Any, clean_db: None
) -> None:
    """Started while the database is down, with a key that is not the keyring's: once the database answers, the
    retries stop at "refused", the vault stays locked (nothing is written under the wrong keys) and /readyz says
    why, without the key."""
    from app.db.engine import make_engine, make_session_factory
    from tests.conftest import app_client

    first = await _open(migrated, var_dir, moodle_fake, OLD)  # the keyring, wrapped under OLD
    await first.close()
    wrong = "a-key-that-is-not-the-keyrings-012345"
    down = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none", var_dir, secret_key=SecretStr(wrong))
    rt = await open_runtime(down)
    try:
        assert rt.keyring == "waiting"
        rt.engine = make_engine(migrated)
        rt.sessions = make_session_factory(rt.engine)
        await asyncio.wait_for(rt.open_keyring_when_possible(every=0.01), timeout=10)  # stops: no endless retries
        assert rt.keyring == "refused"
        with pytest.raises(VaultLocked):
            rt.vault.digest("anything")
        async with app_client(rt) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "keyring refused" in ready.text and wrong not in ready.text and OLD not in ready.text
            refused = await post_contact(client, "wrong-key", contact_id=4401, username="late", email="l@x.org")
            assert refused.status_code == 503
    finally:
        await rt.close()


async def test_a_tenant_added_by_the_cli_after_a_rotation_is_read_with_the_keyrings_keys(
    migrated: str, var_dir: Path, moodle_fake: Any, clean_db: None
) -> None:
    """The CLI encrypts and digests with the keyring's keys, as the API's runtime does: never with keys derived from
    SYNC_SECRET_KEY, which differ from the keyring's once a rotation has moved it to a fresh encryption key."""
    from app.db.tenants import Tenant
    from app.sync import tenants

    first = await _open(migrated, var_dir, moodle_fake, OLD)
    async with first.sessions() as s:
        await keyring.rotate(s, NEW, OLD)
        await s.commit()
    await first.close()
    env = worker_env(database_url=migrated, redis_url="redis://127.0.0.1:1/0", moodle_url="http://m.invalid",
                     var_dir=var_dir) | {"SYNC_SECRET_KEY": NEW}  # fmt: skip
    added = subprocess.run(  # noqa: S603 (our own CLI)
        [*moodle_sync_command(), "tenants", "add", "acme", "--name", "Acme"], env=env, cwd=ROOT, text=True,
        input="COMPAT__WSTOKEN=acme-compat-token-000001\n", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    rt = await _open(migrated, var_dir, moodle_fake, NEW)
    try:
        async with rt.sessions() as s:
            tenant = (await s.execute(select(Tenant))).scalars().one()
            assert rt.vault.decrypt(tenant.secrets["COMPAT__WSTOKEN"]) == "acme-compat-token-000001"
            found = await tenants.find_by_credential(s, rt.vault, "acme-compat-token-000001", names={"COMPAT__WSTOKEN"})
        assert found is not None and found[0].slug == "acme"
    finally:
        await rt.close()
