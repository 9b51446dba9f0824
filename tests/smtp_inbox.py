"""A real SMTP server (aiosmtpd) for the alert tests: it keeps what it receives and can be stopped and restarted."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from app.runtime import Runtime


class Inbox:
    """An SMTP server on 127.0.0.1 that keeps what it receives; it can be stopped and started again."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.received: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.received.append(parsed)  # type: ignore[arg-type]
        return "250 OK"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.received)

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()  # returns once the server answers

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(runtime: Runtime) -> Iterator[Inbox]:
    inbox = Inbox()
    inbox.start()
    alerts = runtime.settings.alerts
    alerts.smtp_host, alerts.smtp_port, alerts.smtp_tls = "127.0.0.1", inbox.port, "none"
    alerts.sender, alerts.recipients = "sync@example.com", ["ops@example.com", "it@example.com"]
    yield inbox
    inbox.stop()
