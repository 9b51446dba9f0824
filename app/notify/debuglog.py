"""The optional debug log file (``alerts.debug_log_file``), as the CourseSales Moodle plugins had."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

from app import logs


def setup_debug_log(path: str | None) -> None:
    """Also write every log line to ``path`` (10 MB x 5 files), redacted as the console's; call after logs.setup().

    Records still pass the configured log level first: SYNC_LOG_LEVEL=DEBUG makes the file a debug log.
    """
    if not path:
        return
    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    logs.add_log_file(handler)
