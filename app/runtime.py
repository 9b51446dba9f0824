"""The resources one process holds: settings, database, upstream clients, the queue connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.coursesales.client import CourseSalesClient
from app.crypto import Vault
from app.db.engine import SessionFactory, make_engine, make_session_factory
from app.db.group_commit import GroupCommit
from app.moodle.client import MoodleClient
from app.settings import Settings
from app.sync.upstreams import StateCache

if TYPE_CHECKING:
    from app.jobs.queue import Queue


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    vault: Vault
    moodle_http: httpx.AsyncClient
    moodle: MoodleClient
    coursesales_http: httpx.AsyncClient
    coursesales: CourseSalesClient
    queue: Queue | None = None  # set once Redis is wired
    # The Moodle user of our token (new enrolments made by it are our own), read once.
    token_user_id: int | None = None
    # One gathering round per family at a time in this process (app.jobs.tasks._claim).
    gathering: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Whether Moodle and CourseSales can be used now (app.sync.upstreams), as this process last read it.
    upstream_states: StateCache = field(default_factory=StateCache)
    _intake: GroupCommit | None = field(default=None, repr=False)

    _intake_engine: AsyncEngine | None = field(default=None, repr=False)

    @property
    def intake(self) -> GroupCommit:
        """Where webhooks put their deliveries: committed in groups, their jobs queued in one round trip."""
        if self._intake is None:
            sessions = self.sessions
            if self.engine.dialect.name == "postgresql":
                # A small pool of its own without the ping before each use (a round trip per batch on the hot
                # path): the group commit retries once on a fresh connection instead.
                self._intake_engine = make_engine(
                    self.settings.effective_database_url, pool_size=2, max_overflow=2, pool_pre_ping=False
                )
                sessions = make_session_factory(self._intake_engine)
            self._intake = GroupCommit(sessions, self._enqueue_new)
        return self._intake

    async def _enqueue_new(self, items: list[tuple[int, str]]) -> bool:
        return self.queue is not None and bool(await self.queue.enqueue_events([(i, 0, kind) for i, kind in items]))

    async def close(self) -> None:
        if self._intake is not None:
            await self._intake.close()
        if self._intake_engine is not None:
            await self._intake_engine.dispose()
        if self.queue is not None:
            await self.queue.close()
        await self.moodle_http.aclose()
        await self.coursesales_http.aclose()
        await self.engine.dispose()


def build_runtime(
    settings: Settings,
    *,
    moodle_transport: httpx.AsyncBaseTransport | None = None,
    coursesales_transport: httpx.AsyncBaseTransport | None = None,
) -> Runtime:
    """Everything but the queue; tests pass transports that reach their fakes."""
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
        duplicate_timeout=settings.moodle.duplicate_timeout_seconds,
    )
    coursesales_http = httpx.AsyncClient(transport=coursesales_transport, timeout=settings.coursesales.timeout_seconds)
    coursesales = CourseSalesClient(
        coursesales_http,
        base_url=settings.coursesales.url or "http://coursesales.invalid",
        username=settings.coursesales.username,
        password=settings.coursesales.password.get_secret_value(),
        timeout=settings.coursesales.timeout_seconds,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        vault=Vault(key),
        moodle_http=moodle_http,
        moodle=moodle,
        coursesales_http=coursesales_http,
        coursesales=coursesales,
    )
