"""The resources one process holds: settings, database, upstream clients, the queue connection."""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import certifi
import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.coursesales.client import CourseSalesClient
from app.crypto import LockedVault, Vault
from app.db.engine import SessionFactory, make_engine, make_session_factory
from app.db.group_commit import GroupCommit
from app.db.inbox import Delivery, Stored
from app.db.tenants import DEFAULT_SLUG, DEFAULT_TENANT_ID
from app.moodle.client import MoodleClient
from app.settings import Settings, secret
from app.sync.upstreams import StateCache

if TYPE_CHECKING:
    from app.hub import Hub
    from app.jobs.queue import Queue

log = structlog.get_logger(__name__)
# The transports of the Moodle and CourseSales HTTP clients (None: the network; tests reach their fakes).
Transports = tuple[httpx.AsyncBaseTransport | None, httpx.AsyncBaseTransport | None]


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    vault: Vault
    queue: Queue | None = None  # set once Redis is wired
    # The Moodle user of our token (new enrolments made by it are our own), read once.
    token_user_id: int | None = None
    # One gathering round per family at a time in this process (app.jobs.tasks._claim).
    gathering: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Whether Moodle and CourseSales can be used now (app.sync.upstreams), as this process last read it.
    upstream_states: StateCache = field(default_factory=StateCache)
    # Whose keys the vault holds: "derived" (from SYNC_SECRET_KEY: build_runtime alone, tests), "open" (the
    # keyring's), "waiting" (the database has not answered yet: the vault refuses), "refused" (the wrong key).
    keyring: str = "derived"
    keyring_task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Whose runtime this is: the tenant default's (the process's own, which holds the engine, the queue, the intake
    # and the hub), or a registered tenant's, made by the hub and sharing those with ``home``.
    tenant_id: int = DEFAULT_TENANT_ID
    slug: str = DEFAULT_SLUG
    name: str = ""  # a registered tenant's name, as its console shows it
    home: Runtime | None = field(default=None, repr=False)
    transports: Transports = field(default=(None, None), repr=False)
    _hub: Hub | None = field(default=None, repr=False)
    _intake: GroupCommit | None = field(default=None, repr=False)
    # Made on first use (a tenant without work holds none: an HTTP client alone is several hundred KB).
    _clients: UpstreamClients | None = field(default=None, repr=False)

    @property
    def moodle(self) -> MoodleClient:
        return self.upstreams().moodle

    @property
    def coursesales(self) -> CourseSalesClient:
        return self.upstreams().coursesales

    def upstreams(self) -> UpstreamClients:
        if self._clients is None:
            self._clients = upstream_clients(self.settings, self.transports)
        return self._clients

    async def close_upstreams(self) -> None:
        """Close the upstream clients, if made (a quiet tenant's, after a while: the next use makes them again)."""
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.moodle_http.aclose()
            await clients.coursesales_http.aclose()

    _intake_engine: AsyncEngine | None = field(default=None, repr=False)

    @property
    def hub(self) -> Hub:
        """The tenants' runtimes (app.hub), the home runtime's."""
        if self.home is not None:
            return self.home.hub
        if self._hub is None:
            from app.hub import Hub

            self._hub = Hub(self)
        return self._hub

    @property
    def intake(self) -> GroupCommit:
        """Where webhooks put their deliveries: committed in groups, their jobs queued in one round trip; one for
        every tenant (each delivery says whose)."""
        if self.home is not None:
            return self.home.intake
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

    async def accept(self, delivery: Delivery) -> Stored:
        """Put a delivery in this tenant's inbox (through the shared intake); raises BodyMismatch as the intake."""
        delivery.tenant_id = self.tenant_id
        return await self.intake.accept(delivery)

    async def _enqueue_new(self, items: list[tuple[int, str]]) -> bool:
        return self.queue is not None and bool(await self.queue.enqueue_events([(i, 0, kind) for i, kind in items]))

    async def open_keyring(self) -> None:
        """Use the data keys of the database's keyring (made on the first open), as SYNC_SECRET_KEY (or, during a
        rotation, SYNC_SECRET_KEY_PREVIOUS) unwraps them."""
        from app.sync import keyring

        current, previous = secret(self.settings.secret_key), secret(self.settings.secret_key_previous)
        if not current:
            return  # no key, nothing encrypted: the commands that need one refuse to start without it
        async with self.sessions() as session:
            opened = await keyring.open_keys(session, current, previous)
        self.vault, self.keyring = Vault(current, keys=opened.keys), "open"
        if opened.with_previous:
            log.warning("keyring.previous_key", fix="run `moodle-sync rotate-key`, then drop SYNC_SECRET_KEY_PREVIOUS")

    async def open_keyring_when_possible(self, every: float = 2.0) -> None:
        """Retry until the database answers; a key that does not open the keyring stops the retries, and /readyz
        says so."""
        from app.sync.keyring import KeyringError

        while self.keyring == "waiting":
            await asyncio.sleep(every)
            try:
                await self.open_keyring()
            except KeyringError as exc:
                log.error("keyring.refused", error=str(exc))
                self.keyring = "refused"
            except Exception as exc:  # still down: said once a retry, by type (no address, no credential)
                log.debug("keyring.still_waiting", error=type(exc).__name__)

    async def close(self) -> None:
        if self.home is not None:  # a tenant's: its clients alone, the rest is home's
            await self.close_upstreams()
            return
        if self._hub is not None:
            await self._hub.close()
        if self.keyring_task is not None:
            self.keyring_task.cancel()
        if self._intake is not None:
            await self._intake.close()
        if self._intake_engine is not None:
            await self._intake_engine.dispose()
        if self.queue is not None:
            await self.queue.close()
        await self.close_upstreams()
        await self.engine.dispose()


async def open_runtime(
    settings: Settings,
    *,
    moodle_transport: httpx.AsyncBaseTransport | None = None,
    coursesales_transport: httpx.AsyncBaseTransport | None = None,
) -> Runtime:
    """The runtime of a process that works on the data: ``build_runtime`` with the keyring opened (every process
    and command that encrypts, decrypts or digests starts here; a structural test keeps it so)."""
    from app.sync.keyring import KeyringError

    rt = build_runtime(settings, moodle_transport=moodle_transport, coursesales_transport=coursesales_transport)
    try:
        await rt.open_keyring()
    except KeyringError:
        await rt.close()
        raise
    except Exception as exc:  # the database does not answer (both restarted at once): start, open it once it does
        log.warning("keyring.waiting_for_database", error=type(exc).__name__)
        rt.vault, rt.keyring = LockedVault(), "waiting"
        rt.keyring_task = asyncio.create_task(rt.open_keyring_when_possible())
    except BaseException:
        await rt.close()
        raise
    return rt


def build_runtime(
    settings: Settings,
    *,
    moodle_transport: httpx.AsyncBaseTransport | None = None,
    coursesales_transport: httpx.AsyncBaseTransport | None = None,
) -> Runtime:
    """Everything but the queue; tests pass transports that reach their fakes."""
    engine = make_engine(settings.effective_database_url)
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    transports = (moodle_transport, coursesales_transport)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        vault=Vault(key),
        transports=transports,
    )


def tenant_runtime(home: Runtime, settings: Settings, *, tenant_id: int, slug: str, name: str = "") -> Runtime:
    """A registered tenant's runtime: its own settings and upstream clients; home's engine, vault and queue."""
    return Runtime(
        settings=settings,
        engine=home.engine,
        sessions=make_session_factory(home.engine, tenant_id),
        vault=home.vault,
        queue=home.queue,
        keyring=home.keyring,
        tenant_id=tenant_id,
        slug=slug,
        name=name,
        home=home,
        transports=home.transports,
    )


@dataclass(frozen=True)
class UpstreamClients:
    moodle_http: httpx.AsyncClient
    moodle: MoodleClient
    coursesales_http: httpx.AsyncClient
    coursesales: CourseSalesClient


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every HTTP client of the process (loading the CA bundle once, not per tenant)."""
    return ssl.create_default_context(cafile=certifi.where())


def upstream_clients(settings: Settings, transports: Transports) -> UpstreamClients:
    """The Moodle and CourseSales clients of one set of settings, with their HTTP clients."""
    moodle_transport, coursesales_transport = transports
    moodle_http = httpx.AsyncClient(
        transport=moodle_transport,
        verify=tls_context(),
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
    coursesales_http = httpx.AsyncClient(
        transport=coursesales_transport, verify=tls_context(), timeout=settings.coursesales.timeout_seconds
    )
    coursesales = CourseSalesClient(
        coursesales_http,
        base_url=settings.coursesales.url or "http://coursesales.invalid",
        username=settings.coursesales.username,
        password=settings.coursesales.password.get_secret_value(),
        timeout=settings.coursesales.timeout_seconds,
        max_in_flight=settings.coursesales.max_in_flight,
    )
    return UpstreamClients(moodle_http, moodle, coursesales_http, coursesales)
