"""`moodle-sync serve` as a subprocess on a free port: tests/procs.py's WorkerProcess running another command."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.procs import LOCALHOST, WorkerProcess, _deadline_wait, free_port


class ServeProcess(WorkerProcess):
    """`moodle-sync serve` (API and worker in one process) on a free port, its output captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, start_timeout: float = 60.0) -> None:
        super().__init__(env, log_path)
        self.start_timeout = start_timeout
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def args(self) -> list[str]:
        return ["serve", "--host", LOCALHOST, "--port", str(self.port)]

    def start(self) -> ServeProcess:
        """Start, and return once /readyz answers 200 (the database is migrated and answers)."""
        super().start()
        what = f"moodle-sync serve {self.url}"
        try:
            _deadline_wait(lambda: self._ready() or not self.running, self.start_timeout, what, every=0.1)
        except TimeoutError as exc:
            self.close()
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None
        if not self.running:
            self.close()
            raise RuntimeError(f"moodle-sync serve exited at start-up:\n{self.log_tail()}")
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.terminate()
        self.close()
