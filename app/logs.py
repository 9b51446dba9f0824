"""Structured logs: JSON lines, the event id bound where there is one, secrets never written."""

from __future__ import annotations

import logging
import re
from typing import Any

import structlog

SECRET_KEYS = re.compile(r"pass(word)?|token|secret|authorization|loginpassword|wstoken", re.I)


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if SECRET_KEYS.search(key):
            event[key] = "[redacted]"
    return event


def setup(level: str = "INFO", *, json_lines: bool = True) -> None:
    logging.basicConfig(level=level, format="%(message)s")
    # httpx logs every request URL at INFO; a CourseSales URL carries the login in its query string.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
