"""`moodle-sync serve` as a subprocess on a free port (tests/procs.py has the other real processes)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import IO

import httpx

from tests.procs import LOCALHOST, ROOT, _deadline_wait, _end, free_port, moodle_sync_command


class ServeProcess:
    """`moodle-sync serve` (API and worker in one process) on a free port, its output captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, start_timeout: float = 60.0) -> None:
        self.env = env
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ServeProcess:
        """Start, and return once /readyz answers 200 (the database is migrated and answers)."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(  # noqa: S603 (our own CLI)
            [*moodle_sync_command(), "serve", "--host", LOCALHOST, "--port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
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

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (escalating to SIGKILL past the deadline); returns the exit code."""
        assert self.proc is not None, "not started"
        try:
            return _end(self.proc, signal.SIGTERM, timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def close(self) -> None:
        """Make sure the process is gone (a failed start, teardown): SIGKILL when still running."""
        if self.proc is not None and self.running:
            _end(self.proc, signal.SIGKILL, 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.stop()
        self.close()
