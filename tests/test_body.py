"""Slow and stalled bodies, on real sockets against the real server.

A client sends its headers and part of a body, then stalls. The server must
answer by the deadline and store nothing, and bodies being read must not hold
more than the process's budget.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from starlette.requests import Request

from app.api.body import BodiesInFlight, BodyTimeout, read_body
from app.config import Settings
from tests.api_helpers import READ, doc
from tests.conftest import CALLBACK_PATH, LiveServer, rows

DEADLINE = 1.0
BUDGET = 1000
BODY = doc(("4001", "deliver", "2020-01-01 12:00:00"))  # 82 bytes: more than is left


@pytest.fixture
def slow_server(settings: Settings) -> Iterator[LiveServer]:
    tight = settings.model_copy(
        update={"body_read_timeout_seconds": DEADLINE, "max_bodies_in_flight_bytes": BUDGET}
    )
    with LiveServer(tight) as live:
        yield live


def start_request(
    server: LiveServer,
    path: str,
    body_start: bytes,
    length: int | None,
    headers: dict[str, str] | None = None,
) -> socket.socket:
    """Headers and the first part of a body, sent; the rest never comes."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\n{framing}\r\n{extra}\r\n"
    if length is None:  # one chunk, and no last chunk
        body_start = f"{len(body_start):x}\r\n".encode() + body_start + b"\r\n"
    sock.sendall(head.encode() + body_start)
    return sock


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the raw answer, read until the server closes or has sent a body."""
    received = b""
    while b"\r\n\r\n" not in received or not _complete(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1]), received


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def nothing_stored(engine: Engine) -> bool:
    return rows(engine, "SELECT count(*) FROM documents") == [(0,)] and rows(
        engine, "SELECT count(*) FROM messages"
    ) == [(0,)]


@pytest.mark.parametrize("length", [len(BODY), None], ids=["content-length", "chunked"])
def test_a_stalled_callback_body_gets_408_by_the_deadline_and_nothing_is_stored(
    slow_server: LiveServer, engine: Engine, length: int | None
) -> None:
    started = time.monotonic()
    with start_request(slow_server, CALLBACK_PATH, BODY[:20], length) as sock:
        status, raw = answer(sock)
        waited = time.monotonic() - started
        assert sock.recv(1) == b""  # and the connection is closed: no rest is read
    assert status == 408
    assert b"application/xml" in raw
    assert b"<error>the body was not received within 1 s</error>" in raw
    assert b"connection: close" in raw.lower()
    assert DEADLINE <= waited < DEADLINE + 2
    assert nothing_stored(engine)


def test_a_stalled_tracking_body_gets_a_json_408(slow_server: LiveServer, engine: Engine) -> None:
    body = b'{"ids": ["4002"]}'
    auth = {"Authorization": READ["Authorization"], "Content-Type": "application/json"}
    with start_request(slow_server, "/api/v1/messages", body[:5], len(body), auth) as sock:
        status, raw = answer(sock)
    assert status == 408
    assert b'"error":"body_timeout"' in raw
    assert nothing_stored(engine)


def test_bodies_in_flight_beyond_the_budget_get_503_until_the_budget_is_free(
    slow_server: LiveServer, engine: Engine
) -> None:
    # A stalled client that declared most of the budget holds it...
    with start_request(slow_server, CALLBACK_PATH, b"<request>", 950) as stalled:
        time.sleep(0.2)  # its headers are read, its reservation made
        with start_request(slow_server, CALLBACK_PATH, BODY, len(BODY)) as second:
            status, raw = answer(second)
        assert status == 503
        assert b"retry-after: 5" in raw.lower()
        assert b"too many request bodies" in raw
        assert nothing_stored(engine)
        # ... until its deadline ends it; the budget is then whole again.
        assert answer(stalled)[0] == 408
    with start_request(slow_server, CALLBACK_PATH, BODY, len(BODY)) as third:
        status, raw = answer(third)
    assert status == 200, raw
    assert b"<id_sms>4001</id_sms>" in raw


def test_an_undeclared_body_is_counted_against_the_budget_as_it_arrives(
    slow_server: LiveServer, engine: Engine
) -> None:
    # Chunked, so nothing is declared: 950 bytes arrive, then it stalls.
    with start_request(slow_server, CALLBACK_PATH, b"<request>" + b" " * 941, None) as stalled:
        time.sleep(0.2)
        with start_request(slow_server, CALLBACK_PATH, BODY, len(BODY)) as second:
            assert answer(second)[0] == 503
        assert answer(stalled)[0] == 408
    assert nothing_stored(engine)


def stalled_read(bodies: BodiesInFlight) -> asyncio.Task[bytes]:
    """A read whose body never comes (its sender stalls after the headers)."""
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return asyncio.create_task(read_body(Request(scope, receive), 1000, bodies))


def test_the_deadline_sweep_ends_a_stalled_read_with_408_and_no_other() -> None:
    async def scenario() -> None:
        bodies = BodiesInFlight(limit=1000, timeout=0.3)  # swept every 50 ms
        loop = asyncio.get_running_loop()
        started = loop.time()
        stalled, cancelled = stalled_read(bodies), stalled_read(bodies)
        await asyncio.sleep(0.1)
        cancelled.cancel()  # the request ends for another reason (shutdown, say)
        with pytest.raises(BodyTimeout):
            await stalled
        assert 0.3 <= loop.time() - started < 0.3 + 0.2
        # Someone else's cancellation stays a cancellation, not a 408.
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # A read that ended is forgotten by the next sweep, and the budget is whole.
        await asyncio.sleep(0.1)
        assert bodies._reading == [] and bodies.held == 0
        await bodies.close()

    asyncio.run(scenario())
