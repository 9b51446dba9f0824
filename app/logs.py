"""Structured logs: one pipeline for every line (ours, uvicorn's access and error logs, arq, SQLAlchemy, httpx),
JSON lines by default, secrets never written.

Redaction works three ways, on every line: a field whose name says secret is masked; a value that looks like
``name=value`` or ``"name": "value"`` with such a name (query strings, forms, reprs) has its value masked; and the
service's own credentials, registered at start-up, are masked wherever they appear, plain or URL-encoded. Access
lines carry the path without its query string (a Moodle client may put ``wstoken`` and a password there).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor

MASK = "[redacted]"
SECRET_KEYS = re.compile(r"pass(word)?|token|secret|authorization|cookie|signature", re.I)
_NAME = r"[\w\[\]%.-]*(?:pass(?:word)?|token|secret|authorization|signature)[\w\[\]%.-]*"
# name=value in a query string or a form (names may be URL-encoded: users%5B0%5D%5Bpassword%5D).
_PARAM = re.compile(rf"(?i)((?<![\w\[\]%.-]){_NAME}=)[^&\s\"'<>]*")
# "name": "value" / 'name': 'value' in a repr or JSON text.
_QUOTED = re.compile(rf"(?i)([\"']{_NAME}[\"']\s*[:=]\s*)([\"'])(?:\\.|(?!\2).)*\2")
# Authorization: Bearer <token> written out in a message.
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_MIN_KNOWN = 6  # shorter registered values would mask ordinary words

_known: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | None]) -> None:
    """Mask these values (the service's credentials) wherever they appear in a line, plain or URL-encoded."""
    global _known
    forms = {f for v in values if v and len(v) >= _MIN_KNOWN for f in (v, quote(v, safe=""), quote_plus(v))}
    _known = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))) if forms else None


def scrub(text: str) -> str:
    """``text`` with every secret in it masked."""
    if _known is not None:
        text = _known.sub(MASK, text)
    text = _PARAM.sub(rf"\1{MASK}", text)
    text = _QUOTED.sub(rf"\1\2{MASK}\2", text)
    return _BEARER.sub(rf"\1{MASK}", text)


def _redact(_logger: Any, _name: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        event[key] = MASK if SECRET_KEYS.search(str(key)) else masked(value)
    return event


def masked(value: Any, depth: int = 0) -> Any:
    """A value with its secrets masked (keys named like a secret, the service's own credentials, pairs and bearer
    tokens in text); lists and mappings keep their shape (a few levels deep). Log fields, and what the console shows."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if depth < 4 and isinstance(value, list | tuple):
        return [masked(item, depth + 1) for item in value]
    if depth < 4 and isinstance(value, dict):
        return {k: MASK if SECRET_KEYS.search(str(k)) else masked(v, depth + 1) for k, v in value.items()}
    return scrub(str(value))


def _access_line(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """uvicorn's access record as fields, its path cut at the query string; other records' arguments dropped
    (they are in the message already)."""
    args = event.pop("positional_args", None)
    if event.get("logger") == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, version, status = args
        event.update(
            event="http.access",
            client=client,
            method=method,
            path=str(path).partition("?")[0],
            http=version,
            status=status,
        )
    return event


_state: dict[str, Any] = {"json_lines": True, "level": "INFO"}


def _shared() -> list[Processor]:
    return [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]


def _final() -> list[Processor]:
    renderer = (
        structlog.processors.JSONRenderer() if _state["json_lines"] else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [structlog.processors.format_exc_info, _redact, renderer]


def formatter() -> logging.Formatter:
    """The formatter of every handler: the standard library's records through the same chain as structlog's."""
    return structlog.stdlib.ProcessorFormatter(
        pass_foreign_args=True,
        foreign_pre_chain=[structlog.stdlib.add_logger_name, _access_line, *_shared()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_final()],
    )


class _OncePerProcess(logging.Filter):
    """arq says its start, its Redis and its stop once per worker, and a process runs one per queue: the CLI says
    them once instead (worker.started, worker.stopped)."""

    PREFIXES = ("Starting worker for", "redis_version=", "shutdown on ")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def setup(level: str = "INFO", *, json_lines: bool = True) -> None:
    """structlog and the standard library's logging as one pipeline, writing to stdout."""
    _state.update(json_lines=json_lines, level=level)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter())
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO: one line per call is noise (a CourseSales login in one is masked).
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    arq = logging.getLogger("arq.worker")
    if not any(isinstance(f, _OncePerProcess) for f in arq.filters):
        arq.addFilter(_OncePerProcess())
    # uvicorn's loggers keep no handlers of their own: their lines reach the root's formatter.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_shared(), *_final()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def add_log_file(handler: logging.Handler) -> None:
    """Also write every line to ``handler`` (the debug log file): structlog's lines then go through the standard
    library too, so that both handlers get them, formatted by the same chain."""
    handler.setFormatter(formatter())
    logging.getLogger().addHandler(handler)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_shared(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
