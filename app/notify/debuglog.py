"""The optional debug log file (``alerts.debug_log_file``), as the CourseSales Moodle plugins had."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

import structlog


def setup_debug_log(path: str | None) -> None:
    """Also write every log record to ``path`` (10 MB x 5 files); call after app.logs.setup().

    Records still pass the configured log level first: SYNC_LOG_LEVEL=DEBUG makes the file a debug log.
    """
    if not path:
        return
    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    # app.logs prints structlog's lines straight to stdout; routed through stdlib logging they reach both
    # the console handler and this file, rendered (and redacted) as before.
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
