"""Real processes for fault tests: an ASGI app on a port, a private redis-server, worker subprocesses.

Everything here is bounded in time and cleaned up: each start waits for readiness under a deadline, each stop
escalates to SIGKILL when a process does not go in time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import uvicorn

from tests.conftest import TEST_TOKENS

ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port the kernel just handed out (free now; used for servers that must bind by number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _deadline_wait(check: Any, timeout: float, what: str, every: float = 0.02) -> None:
    """Poll a synchronous condition until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"{what}: not ready within {timeout}s")


class ServedApp:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread with its own event loop."""

    def __init__(self, app: Any, *, start_timeout: float = 10.0) -> None:
        self.app = app
        self.start_timeout = start_timeout
        # Bound here, not by uvicorn: the port is known before the thread starts and cannot be taken meanwhile.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOCALHOST, 0))
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # An in-flight slow call must not hold the test's teardown for long.
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"asgi-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self._sock]))

    def start(self) -> ServedApp:
        """Start serving; returns once uvicorn reports it is up."""
        self._thread.start()
        _deadline_wait(
            lambda: self.server.started or not self._thread.is_alive(), self.start_timeout, f"ASGI server {self.url}"
        )
        if not self.server.started:
            raise RuntimeError(f"ASGI server on {self.url} stopped during start-up")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise TimeoutError(f"ASGI server on {self.url} did not stop within {timeout}s")

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A private redis-server on a spare port, without persistence; stop() and start() keep the port."""

    def __init__(self, workdir: Path, *, binary: str = "redis-server", start_timeout: float = 10.0) -> None:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeError(f"{binary} is not on PATH")
        self.binary = found
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return self
        self._log = open(self.workdir / "redis.log", "ab")
        args = [self.binary, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", LOCALHOST]
        args += ["--dir", str(self.workdir), "--daemonize", "no"]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)  # noqa: S603
        _deadline_wait(lambda: self._pong() or not self.running, self.start_timeout, f"redis-server :{self.port}")
        if not self.running:
            raise RuntimeError(f"redis-server on port {self.port} exited at start; see {self.workdir / 'redis.log'}")
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, or SIGKILL for a crash) and wait until the port refuses connections."""
        if self.proc is not None:
            _end(self.proc, signal.SIGKILL if kill else signal.SIGTERM, timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        _deadline_wait(lambda: not self._pong(), timeout, f"redis-server :{self.port} to go away")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> int:
    """Signal one process (by its pid only) and reap it; escalate to SIGKILL past the deadline."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
            raise
    return int(proc.returncode)


def worker_env(
    *,
    database_url: str,
    redis_url: str,
    moodle_url: str,
    var_dir: Path,
    lease_seconds: int = 3,
    sweep_interval_seconds: int = 1,
    moodle_token: str = "test-token",  # noqa: S107 (the Moodle fake's token)
    **extra: str,
) -> dict[str, str]:
    """Environment for a `moodle-sync` subprocess: this test's database, Redis and Moodle, test-mode secrets."""
    # Inherited SYNC_* (CI sets SYNC_DATABASE_URL and SYNC_REDIS_URL) must not leak past the explicit values.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(
        {
            "SYNC_MODE": "test",
            "SYNC_CONFIG": str(var_dir / "no-such-sync.toml"),  # never a developer's ./sync.toml
            "SYNC_VAR_DIR": str(var_dir),
            "SYNC_DATABASE_URL": database_url,
            "SYNC_REDIS_URL": redis_url,
            "SYNC_MOODLE__URL": moodle_url,
            "SYNC_MOODLE__TOKEN": moodle_token,
            # The same key as the in-process API: the worker must decrypt the passwords it stored.
            "SYNC_SECRET_KEY": TEST_TOKENS["secret_key"],
            "SYNC_API__TOKEN": TEST_TOKENS["api"],
            "SYNC_WEBHOOKS__COURSESALES_TOKEN": TEST_TOKENS["coursesales"],
            "SYNC_JOBS__LEASE_SECONDS": str(lease_seconds),
            "SYNC_JOBS__SWEEP_INTERVAL_SECONDS": str(sweep_interval_seconds),
            "SYNC_RECONCILE__INTERVAL_MINUTES": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def moodle_sync_command() -> list[str]:
    """The `moodle-sync` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("moodle-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


class WorkerProcess:
    """`moodle-sync worker --queue <queue>` as a subprocess, its output captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, queue: str = "default") -> None:
        self.env = env
        self.log_path = log_path
        self.queue = queue
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def args(self) -> list[str]:
        """The command's arguments after `moodle-sync` (a subclass runs another command the same way)."""
        return ["worker", "--queue", self.queue]

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(  # noqa: S603
            [*moodle_sync_command(), *self.args()],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL: the crash of a machine or an OOM kill; no handler runs."""
        return self._end(signal.SIGKILL, timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (what `docker stop` and Kubernetes send) and wait for the exit; returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        assert self.proc is not None, "not started"
        try:
            return _end(self.proc, sig, timeout)
        finally:
            if self.proc.poll() is not None and self._log is not None:
                self._log.close()
                self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def close(self) -> None:
        """Make sure the process is gone (teardown): SIGKILL when still running."""
        if self.proc is not None:
            if self.running:
                self.kill()
            elif self._log is not None:
                self._log.close()
                self._log = None


def run_cli(
    database_url: str, command: str, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`moodle-sync COMMAND ARGS` against this test's database (test-mode secrets, no config file, wide columns),
    its output captured; ``env`` adds or overrides variables."""
    full = {
        **os.environ,
        "SYNC_MODE": "test",
        "SYNC_DATABASE_URL": database_url,
        "SYNC_CONFIG": str(ROOT / "no-such-config.toml"),
        "COLUMNS": "200",
        "SYNC_SECRET_KEY": TEST_TOKENS["secret_key"],
        **env,
    }
    return subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
        [sys.executable, "-m", "app.cli", command, *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
