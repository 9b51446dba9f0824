"""The CLI's HTTP server over real sockets: the header cap, the header and body deadlines, the connection cap.

Every server runs on asyncio and on uvloop (what the CLI runs when installed): their transports differ.
"""

from __future__ import annotations

import asyncio
import pickle
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.server import ServerState

from app.http_server import GuardedHttpToolsProtocol, server_config
from app.settings import ApiSettings
from tests.conftest import TEST_REDIS_URL
from tests.procs import LOCALHOST, ServedApp

LIMIT = 4096  # max_header_bytes of most tests (ApiSettings allows 1024 and up)
HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
KEEP_ALIVE = 5  # uvicorn's timeout_keep_alive, well above the header timeout
MIB = 1024 * 1024


async def tiny_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200 with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    text = b"got %d" % size
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": text})


class GuardedApp(ServedApp):
    """ServedApp's thread and socket, with the server the CLI builds, on the given event loop."""

    def __init__(self, api: ApiSettings, loop: str) -> None:
        super().__init__(tiny_app)
        self.loop_name = loop
        config = server_config(
            tiny_app,
            host=LOCALHOST,
            port=self.port,
            api=api,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)

    def _run(self) -> None:
        factory = uvloop.new_event_loop if self.loop_name == "uvloop" else None
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self.server.serve(sockets=[self._sock]))

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def wait_connections(self, count: int, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while self.open_connections() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_connections()} connections open, not {count}")
            time.sleep(0.01)


class Client:
    """One client connection, reading responses one at a time (what is read past one is kept for the next)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOCALHOST, port), timeout=5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def response(self) -> tuple[int, bytes]:
        """The next response's status and body; EOFError when the server closes first."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self._recv()
            if not chunk:
                raise EOFError(f"closed after {self.buffer[:80]!r}")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            chunk = self._recv()
            if not chunk:
                raise EOFError("closed in the body")
            rest += chunk
        self.buffer = rest[length:]
        return int(lines[0].split()[1]), rest[:length]

    def until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything the server sends until it closes (raises socket.timeout if it does not)."""
        self.sock.settimeout(timeout)
        received = self.buffer
        while chunk := self._recv():
            received += chunk
        self.buffer = b""
        return received

    def close(self) -> None:
        self.sock.close()


def make_request(*, head_size: int | None = None, body: bytes = b"", method: str = "POST") -> bytes:
    """A request whose request line and headers (final blank line included) are exactly head_size bytes."""
    head = f"{method} /echo HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n".encode()
    if head_size is not None:
        pad = head_size - len(head) - len(b"x-pad: \r\n\r\n")
        assert pad >= 0
        head += b"x-pad: " + b"a" * pad + b"\r\n"
    head += b"\r\n"
    assert head_size is None or len(head) == head_size
    return head + body


@pytest.fixture(params=["asyncio", "uvloop"])
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., GuardedApp]]:
    """Starts a guarded server with small limits (overridable); stops it at teardown."""
    started: list[GuardedApp] = []

    def start(**overrides: Any) -> GuardedApp:
        limits = {"max_header_bytes": LIMIT, "header_timeout_seconds": HEADER_TIMEOUT}
        api = ApiSettings(**{**limits, "body_timeout_seconds": BODY_TIMEOUT, **overrides})
        started.append(GuardedApp(api, request.param).start())
        return started[-1]

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def client() -> Iterator[Callable[[int], Client]]:
    """Opens client connections; closes them at teardown."""
    opened: list[Client] = []

    def connect(port: int) -> Client:
        opened.append(Client(port))
        return opened[-1]

    yield connect
    for c in opened:
        c.close()


def test_config_carries_the_limits() -> None:
    api = ApiSettings(max_header_bytes=2048, max_connections=7, header_timeout_seconds=3, body_timeout_seconds=4)
    config = server_config(tiny_app, host=LOCALHOST, port=8123, api=api, lifespan="off")
    assert (config.host, config.port, config.lifespan, config.log_config) == (LOCALHOST, 8123, "off", None)
    assert config.limit_concurrency == 8  # uvicorn refuses at the limit; max_connections are served
    # uvicorn spawns the processes of `--workers N` with a pickled Config: the protocol must survive it.
    config = pickle.loads(pickle.dumps(config))  # noqa: S301 (our own bytes)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    assert isinstance(protocol, GuardedHttpToolsProtocol)
    assert (protocol.max_header_bytes, protocol.header_timeout, protocol.body_timeout) == (2048, 3.0, 4.0)


def test_head_of_exactly_the_limit_is_served_one_byte_more_is_431(
    serve: Callable[..., GuardedApp], client: Any
) -> None:
    app = serve()
    # Head and body in one read: the limit falls inside it, the body must not count.
    c = client(app.port)
    c.send(make_request(head_size=LIMIT, body=b"b" * 300))
    assert c.response() == (200, b"got 300")
    # The head's last byte arrives with the body, in a second read.
    request = make_request(head_size=LIMIT, body=b"b" * 300)
    c.send(request[: LIMIT - 1])
    time.sleep(0.05)
    c.send(request[LIMIT - 1 :])
    assert c.response() == (200, b"got 300")

    c = client(app.port)
    c.send(make_request(head_size=LIMIT + 1, method="GET"))
    status, body = c.response()
    assert (status, body) == (431, b"Request header fields too large")
    assert c.until_closed() == b""


def test_one_megabyte_header_is_refused_and_the_server_goes_on(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve(max_header_bytes=64 * 1024)
    c = client(app.port)
    started = time.monotonic()
    try:
        c.send(b"GET / HTTP/1.1\r\nhost: test\r\nx-big: " + b"a" * MIB + b"\r\n\r\n")
    except OSError:  # the server closed while we were still sending: the refusal came mid-way
        pass
    received = c.until_closed()
    # The 431 is on the wire, but a close with unread bytes is a reset, which may overtake it.
    assert received == b"" or received.startswith(b"HTTP/1.1 431 "), received[:80]
    assert time.monotonic() - started < 2
    app.wait_connections(0)

    c = client(app.port)
    c.send(make_request(body=b"hello"))
    assert c.response() == (200, b"got 5")


def test_headers_that_stop_coming_are_closed_in_time(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve()
    c = client(app.port)
    c.send(b"GET / HTTP/1.1\r\nhost: test\r\n")
    started = time.monotonic()
    received = c.until_closed()
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + 1.5


def test_a_connection_that_sends_nothing_is_closed_in_time(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve()
    started = time.monotonic()
    c = client(app.port)
    received = c.until_closed()
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + 1.5
    app.wait_connections(0)


def _trickle(c: Client, data: bytes, every: float = 0.05) -> float:
    """Sends data a byte at a time until the server answers or closes; returns how long that took."""
    started = time.monotonic()
    for byte in data:
        try:
            c.send(bytes([byte]))
        except OSError:
            break
        if select.select([c.sock], [], [], every)[0]:
            break
    return time.monotonic() - started


def test_headers_trickled_byte_by_byte_are_closed_in_time(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve()
    c = client(app.port)
    # 200 bytes at 20 a second would take 10 s.
    elapsed = _trickle(c, make_request(head_size=200, method="GET"))
    received = c.until_closed()
    assert received == b"" or received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + 1.5


def test_a_body_that_stops_coming_is_closed_in_time(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve()
    c = client(app.port)
    c.send(b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\n" + b"b" * 10)
    started = time.monotonic()
    received = c.until_closed()
    elapsed = time.monotonic() - started
    # The app was waiting for the body: no response had begun, so the server says why it gives up.
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert BODY_TIMEOUT * 0.8 < elapsed < BODY_TIMEOUT + 1.5
    app.wait_connections(0)


def test_a_body_trickled_byte_by_byte_is_closed_in_time(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve()
    c = client(app.port)
    c.send(b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 200\r\n\r\n")
    elapsed = _trickle(c, b"b" * 200)
    received = c.until_closed()
    assert received == b"" or received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert BODY_TIMEOUT * 0.8 < elapsed < BODY_TIMEOUT + 1.5


def test_keep_alive_requests_each_get_the_whole_limit_and_deadline(
    serve: Callable[..., GuardedApp], client: Any
) -> None:
    app = serve()
    three_quarters = make_request(head_size=LIMIT * 3 // 4, body=b"b" * 10)
    c = client(app.port)
    # Two in a row: together their heads are over the limit.
    c.send(three_quarters)
    assert c.response() == (200, b"got 10")
    c.send(three_quarters)
    assert c.response() == (200, b"got 10")
    # Pipelined in one write: the second head begins inside the read that completes the first.
    c.send(three_quarters * 2)
    assert c.response() == (200, b"got 10")
    assert c.response() == (200, b"got 10")
    # Idle between requests for longer than the header timeout: that is keep-alive, not a slow head.
    time.sleep(HEADER_TIMEOUT * 2)
    c.send(three_quarters)
    assert c.response() == (200, b"got 10")
    # The next request's first bytes start its header deadline.
    c.send(three_quarters[:100])
    started = time.monotonic()
    received = c.until_closed()
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]
    assert HEADER_TIMEOUT * 0.8 < time.monotonic() - started < HEADER_TIMEOUT + 1.5


def test_past_max_connections_a_request_is_answered_503(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve(max_connections=2, header_timeout_seconds=5)  # the idle connections must stay open
    idle = client(app.port)
    app.wait_connections(1)
    c = client(app.port)
    c.send(make_request())
    assert c.response() == (200, b"got 0")  # two connections open: the limit, still served
    c.close()
    app.wait_connections(1)

    idle2 = client(app.port)
    app.wait_connections(2)
    c = client(app.port)
    c.send(make_request())
    assert c.response() == (503, b"Service Unavailable")  # three open

    idle.close()
    idle2.close()
    app.wait_connections(0)
    c = client(app.port)
    c.send(make_request())
    assert c.response() == (200, b"got 0")


def test_ten_connections_of_20_mb_headers_are_each_refused_early(serve: Callable[..., GuardedApp], client: Any) -> None:
    app = serve(max_header_bytes=64 * 1024)
    line = b"x-pad: " + b"a" * 1015 + b"\r\n"  # 1 KiB
    block = line * 64
    sent = [0] * 10
    outcome: list[bytes | None] = [None] * 10
    clients = [client(app.port) for _ in range(10)]

    def attack(i: int) -> None:
        c = clients[i]
        # A small send buffer keeps what the kernels hold on the way (not the server) to a few hundred KB.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        try:
            c.send(b"GET / HTTP/1.1\r\nhost: test\r\n")
            while sent[i] < 20 * MIB:
                c.send(block)
                sent[i] += len(block)
        except OSError:
            pass
        outcome[i] = c.until_closed()

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(10)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert time.monotonic() - started < 5
    for i in range(10):
        # Refused after the first 64 KiB: what got sent at all is what sat in socket buffers meanwhile.
        assert sent[i] < 2 * MIB, sent
        assert outcome[i] == b"" or outcome[i].startswith(b"HTTP/1.1 431 "), outcome[i]
    app.wait_connections(0)

    c = client(app.port)
    c.send(make_request(body=b"hello"))
    assert c.response() == (200, b"got 5")


def raw_status(port: int, request: bytes, timeout: float = 10.0) -> int | None:
    """The status a server answers ``request`` with, or None when it closed (or reset) the connection instead."""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            head = sock.recv(64)
        except OSError:
            return None
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None


def big_header_request(size: int = MIB) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * size + b"\r\n\r\n"


@pytest.mark.parametrize("processes", [1, 2])
def test_the_cli_server_refuses_a_1_mb_header(migrated: str, tmp_path: Any, processes: int) -> None:
    """`moodle-sync api` (one process, and `--workers 2`) runs the guarded server with the settings' limits."""
    import subprocess

    from tests.procs import free_port, moodle_sync_command, worker_env

    port = free_port()
    env = worker_env(database_url=migrated, redis_url=TEST_REDIS_URL, moodle_url="", var_dir=tmp_path)
    log = open(tmp_path / "api.log", "wb")
    args = [*moodle_sync_command(), "api", "--port", str(port), "--workers", str(processes)]
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)  # noqa: S603 (our own CLI)
    ok = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    try:
        deadline = time.monotonic() + 60
        while raw_status(port, ok, timeout=1) != 200 if _listening(port) else True:
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "api.log").read_text()[-2000:]
            time.sleep(0.1)
        assert raw_status(port, big_header_request()) in (431, None)
        assert raw_status(port, big_header_request(60 * 1024)) == 200, "under api.max_header_bytes (64 KB)"
        assert raw_status(port, ok) == 200
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
        return True
    except OSError:
        return False
