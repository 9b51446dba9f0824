"""The uvicorn server the CLI runs: httptools (h11 would cost the hot path), with the limits httptools lacks.

httptools buffers a request's headers without any cap and uvicorn times out neither headers nor bodies, so a
client could hold megabytes, or a connection, for ever; ``GuardedHttpToolsProtocol`` adds both limits.
"""

from __future__ import annotations

import asyncio
import functools
from asyncio import TimerHandle, Transport
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import ApiSettings

# Where the current request stands. Every stage below _BODY counts its bytes as request line and headers.
_IDLE = 0  # no byte of the next request yet (a fresh connection, or keep-alive between requests)
_HEAD = 1  # the request has begun, its headers have not all arrived
_BODY = 2  # headers complete, body not
_DONE = 3  # refused, timed out, closed or upgraded: no more limits to enforce

_DEFAULTS = ApiSettings()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on a request's head and deadlines for its head and its body.

    - More than ``max_header_bytes`` of request line and headers: 431 and close, as soon as the read that crosses
      the limit arrives (the bytes are counted, never kept). The count is exact: a head of exactly the limit is
      served.
    - Headers not complete ``header_timeout`` seconds after the request's first byte (after connection_made for a
      connection's first request, so a connection that sends nothing is closed too): 408 and close.
    - Body not complete ``body_timeout`` seconds after the headers: 408 and close, or only close once a response
      has begun.

    An idle keep-alive connection between requests is left to uvicorn's ``timeout_keep_alive``. A request whose
    head and body arrive in one read (the common case) arms no timer at all.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int = _DEFAULTS.max_header_bytes,
        header_timeout: float = _DEFAULTS.header_timeout_seconds,
        body_timeout: float = _DEFAULTS.body_timeout_seconds,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._stage = _IDLE
        self._head_bytes = 0
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]  # uvicorn narrows it too
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stage = _DONE
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._stage < _BODY:
            counted = self._head_bytes + len(data)
            self._head_bytes = counted
            if counted > self.max_header_bytes:
                self._limit_within(data, len(data) - (counted - self.max_header_bytes))
                return
        # httptools parses any buffer; uvicorn annotates bytes, and _limit_within passes memoryview slices.
        super().data_received(cast(bytes, data))
        # Armed after parsing, not per stage change: a request complete in this read needs no timer.
        stage = self._stage
        if stage == _HEAD:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
        elif stage == _BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def _limit_within(self, data: bytes | memoryview, allowed: int) -> None:
        """The limit falls inside this read: the head is within it only if it ends in the first ``allowed`` bytes
        (the rest may be its body or the next request, both legitimate)."""
        self._head_bytes -= len(data)
        cycle = self.cycle
        view = memoryview(data)  # slices of a view copy nothing
        if allowed > 0:
            self.data_received(view[:allowed])
            if self._stage == _DONE or self.transport.is_closing():
                return
        if self.cycle is cycle:  # no on_headers_complete: the head goes on past the limit
            self._give_up(431, b"Request header fields too large")
            return
        self.data_received(view[allowed:])

    # Parser callbacks (httptools calls them from inside feed_data)
    def on_message_begin(self) -> None:
        self._stage = _HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._stage = _BODY
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stage = _IDLE
        self._head_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The connection now belongs to the WebSocket protocol: its frames are no HTTP body.
        self._stage = _DONE
        self._cancel_timers()
        super().handle_websocket_upgrade()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._give_up(408, b"Request headers not received in time")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            self._give_up(408, b"Request body not received in time")

    def _give_up(self, status: int, text: bytes) -> None:
        """Answer ``status`` when nothing else is on its way to the client, then close the connection."""
        cycle = self.cycle
        if self._stage == _BODY:
            # A pipelined request waits in self.pipeline behind one whose response would come first.
            answer = not cycle.response_started and not self.pipeline
        else:
            # Its head is incomplete, so it has no cycle yet; self.cycle is the previous request's.
            answer = cycle is None or cycle.response_complete
        self._stage = _DONE
        self._cancel_timers()
        if answer:
            if cycle is not None and not cycle.response_complete:
                # The app may still answer: its response must not follow ours on the wire, and its receive()
                # must end rather than wait for a body that will not come.
                cycle.disconnected = True
                cycle.message_event.set()
            # Debug only: under an attack, a line per refusal would flood the logs.
            self.logger.debug("%s - %d %s", self.client, status, text.decode())
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content += [name, b": ", value, b"\r\n"]
            content += [
                b"content-type: text/plain; charset=utf-8\r\ncontent-length: ",
                str(len(text)).encode(),
                b"\r\nconnection: close\r\n\r\n",
                text,
            ]
            self.transport.write(b"".join(content))
        self.transport.close()

    def _cancel_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


def guarded_protocol(
    *, max_header_bytes: int, header_timeout: float, body_timeout: float
) -> Callable[..., GuardedHttpToolsProtocol]:
    """The protocol for ``uvicorn.Config(http=...)``, with these limits.

    A partial rather than a made-up subclass: uvicorn pickles its Config into the processes of ``--workers N``
    (spawn), and a class made inside a function cannot be pickled.
    """
    return functools.partial(
        GuardedHttpToolsProtocol,
        max_header_bytes=max_header_bytes,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
    )


def limits(api: ApiSettings) -> dict[str, Any]:
    """The ``uvicorn.Config`` options that carry ``api``'s limits (for ``server_config`` and ``uvicorn.run``).

    Concurrency: uvicorn itself answers a request 503 when more than ``api.max_connections`` connections are
    open, the asking one included (it refuses at ``limit_concurrency``, hence the ``+ 1``). Connections past the
    limit are still accepted: the 503 comes once their headers are in, and the header limits above bound what
    they may hold until then.
    """
    protocol = guarded_protocol(
        max_header_bytes=api.max_header_bytes,
        header_timeout=api.header_timeout_seconds,
        body_timeout=api.body_timeout_seconds,
    )
    # uvicorn calls http_protocol_class(config=..., ...) and nothing else on it: a partial serves as a class.
    return {
        "http": cast("type[asyncio.Protocol]", protocol),
        "limit_concurrency": api.max_connections + 1,
        # X-Forwarded-For/-Proto believed from these peers only: request.url.scheme and request.client follow them.
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(api.trusted_proxies),
    }


def server_config(app: Any, *, host: str, port: int, api: ApiSettings, **extra: Any) -> uvicorn.Config:
    """The uvicorn Config of the CLI's server: the guarded httptools protocol with ``api``'s limits (``limits``);
    ``extra`` goes to ``uvicorn.Config`` as is (``log_level``, ``lifespan``, ...)."""
    return uvicorn.Config(app, host=host, port=port, log_config=None, **limits(api), **extra)
