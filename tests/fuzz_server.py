"""The real app served over HTTP on 127.0.0.1 from a background thread, for schemathesis.

The runtime (engine, Redis queue, fake-backed HTTP clients) is built *inside* the server thread's event loop:
asyncpg / redis connections belong to the loop that opened them, so the session-scoped test loop's `runtime`
fixture cannot be shared with uvicorn's loop. It is otherwise built exactly like that fixture: the same settings,
the Moodle and CourseSales fakes, a real Redis emptied first, and empty tables.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import traceback
from typing import Any

import httpx
import uvicorn
from sqlalchemy import delete
from sqlmodel import SQLModel

from app.jobs.queue import Queue, connect
from app.jobs.redis import redis_settings
from app.main import create_app
from app.runtime import build_runtime
from app.settings import Settings


class FuzzServer:
    """`with FuzzServer(settings) as srv:` serves the app at ``srv.base_url``; see ``errors_since()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._exceptions: list[BaseException] = []  # exceptions that escaped the app (each one is a 500)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)
        self._failure: BaseException | None = None

    @property
    def error_count(self) -> int:
        return len(self._exceptions)

    def errors_since(self, index: int) -> list[str]:
        """Tracebacks of the exceptions that escaped the app since the ``index``-th one.

        Formatted here, in the caller's thread, never in the server's: formatting them in the server thread (CPython
        3.11 calls ast.parse to draw the ^^^ carets) was seen to leave every later ast.parse of the process failing
        with "SystemError: AST constructor recursion depth mismatch", pytest's failure reports included
        (INTERNALERROR). Why exactly was not pinned down; the main thread alone never showed it.
        """
        return ["".join(traceback.format_exception(exc)) for exc in self._exceptions[index:]]

    def __enter__(self) -> FuzzServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self._server is not None and self._server.started):
            if self._failure is not None:
                raise RuntimeError("the fuzz server did not start") from self._failure
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fuzz server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._failure = exc

    async def _serve(self) -> None:
        from tests.fakes.coursesales import CourseSalesFake
        from tests.fakes.moodle import MoodleFake

        settings = self.settings
        rt = build_runtime(
            settings,
            moodle_transport=httpx.ASGITransport(app=MoodleFake(version="4.3", token="test-token")),
            coursesales_transport=httpx.ASGITransport(app=CourseSalesFake()),
        )
        try:
            async with rt.engine.begin() as conn:
                for table in reversed(SQLModel.metadata.sorted_tables):
                    await conn.execute(delete(table))
            rt.queue = Queue(connect(redis_settings(settings)))
            await rt.queue.redis.flushdb()
            app = create_app(settings, runtime=rt)

            async def recording_app(scope: Any, receive: Any, send: Any) -> None:
                try:
                    await app(scope, receive, send)
                except Exception as exc:
                    self._exceptions.append(exc)  # formatted by the reader: see `errors`
                    raise

            config = uvicorn.Config(recording_app, lifespan="on", log_level="critical", access_log=False)
            self._server = uvicorn.Server(config)
            await self._server.serve(sockets=[self._sock])
        finally:
            await rt.close()
