"""The resources one process holds: settings, database, upstream clients, the queue connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.crypto import Vault
from app.db.engine import SessionFactory, make_engine, make_session_factory
from app.moodle.client import MoodleClient
from app.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    vault: Vault
    moodle_http: httpx.AsyncClient
    moodle: MoodleClient
    queue: Any = None  # app.jobs.queue.Queue, set once Redis is wired
    extra: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        await self.moodle_http.aclose()
        await self.engine.dispose()


def build_runtime(settings: Settings, *, moodle_transport: httpx.AsyncBaseTransport | None = None) -> Runtime:
    """Everything but the queue; tests pass a transport that reaches their Moodle fake."""
    engine = make_engine(settings.effective_database_url)
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    moodle_http = httpx.AsyncClient(
        transport=moodle_transport,
        timeout=settings.moodle.timeout_seconds,
        limits=httpx.Limits(max_connections=settings.moodle.max_in_flight * 2),
        headers={"User-Agent": "coursesales-moodle-sync"},
    )
    moodle = MoodleClient(
        moodle_http,
        url=settings.moodle.url or "http://moodle.invalid",
        token=settings.moodle.token.get_secret_value(),
        max_in_flight=settings.moodle.max_in_flight,
        timeout=settings.moodle.timeout_seconds,
        max_batch=settings.moodle.max_batch,
        max_input_vars=settings.moodle.max_input_vars,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        vault=Vault(key),
        moodle_http=moodle_http,
        moodle=moodle,
    )
