"""The Moodle and CourseSales fakes of the tests, served over HTTP on loopback for the benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn

from bench.common import free_port


class Served:
    """An ASGI app on 127.0.0.1 in a thread of its own; the app object stays inspectable."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class StepClock:
    """Wraps the CourseSales fake: the time each process step reached it, by Document."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: dict[str, float] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        for document, _step in self.app.steps[len(self.times) :]:
            self.times.setdefault(document, time.time())
