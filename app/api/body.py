"""Reading a request body whole, within a size, a deadline and a shared memory budget.

    BodyRefused        nothing was read whole; nothing may be stored
      BodyTooLarge     413: over the size limit (declared or counted)
      BodyTimeout      408: not complete within the deadline
      BodiesBusy       503: bodies being read already hold the process's budget

uvicorn has no header or body read timeout, so a client that sends part of a
body and stalls would otherwise hold its buffer and its task for as long as
the connection lives. The deadline ends that; the budget bounds the memory
that many such clients can pin at once, before any of them times out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import ClientDisconnect, Request

from app.api.errors import RETRY_AFTER_SECONDS


class BodyRefused(Exception):
    status = 400
    code = "body_refused"

    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.headers = reason, headers


class BodyTooLarge(BodyRefused):
    status, code = 413, "body_too_large"


class BodyTimeout(BodyRefused):
    status, code = 408, "body_timeout"

    def __init__(self, reason: str) -> None:
        # The sender has stalled: end the connection (RFC 9110, 408). The
        # others keep it: closing on a sender still sending its body resets
        # the connection before it reads the answer; uvicorn drops the rest.
        super().__init__(reason, {"Connection": "close"})


class BodiesBusy(BodyRefused):
    status, code = 503, "too_many_bodies_in_flight"


class BodiesInFlight:
    """Bodies being read, process-wide (one event loop, no lock needed): the
    bytes they hold against the budget, and their deadlines.

    One sweep task keeps every deadline: each tick (a tenth of the timeout,
    50 ms to 1 s) it cancels the reads past theirs, so a stalled body is
    answered 408 at most a tick late. `asyncio.timeout` per request put a
    timer into the loop's heap and took it out again: reading a one-chunk
    body took 12-15 us with it, 6 us with the sweep (bench/RESULTS.md).
    """

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.held = 0
        self.timeout = timeout
        self._reading: list[_Reading] = []
        self._sweeper: asyncio.Task[None] | None = None

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise BodiesBusy(
                "too many request bodies are being received; send again later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size

    def watch(self) -> _Reading:
        """The current task's read, to be cancelled at its deadline."""
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), name="body-deadlines")
        task = asyncio.current_task()
        assert task is not None
        reading = _Reading(loop.time() + self.timeout, task)
        self._reading.append(reading)
        return reading

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def _sweep(self) -> None:
        tick = min(1.0, max(0.05, self.timeout / 10))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            reading, self._reading = self._reading, []
            for read in reading:
                if read.done:
                    continue
                if read.deadline <= now:
                    read.expired = True
                    read.task.cancel()
                else:
                    self._reading.append(read)


class _Reading:
    """One body being read: its task, and whether the sweep cancelled it."""

    __slots__ = ("deadline", "done", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[Any]) -> None:
        self.deadline, self.task = deadline, task
        self.done = self.expired = False


async def read_body(request: Request, limit: int, bodies: BodiesInFlight) -> bytes:
    """The body, or `BodyRefused`: larger than `limit` bytes (whether or not
    Content-Length was sent), slower than `bodies.timeout` seconds, or over the
    budget of `bodies`."""
    declared = request.headers.get("content-length", "")
    # A declared length is taken from the budget at once: refused before any read.
    reserved = int(declared) if declared.isdigit() else 0
    if reserved > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes")
    bodies.take(reserved)
    reading = bodies.watch()
    try:
        return await _read(request, limit, bodies, reserved)
    except asyncio.CancelledError:
        # Ours (the sweep's) unless the task was cancelled for another reason
        # too: the same test `asyncio.timeout` makes.
        if reading.expired and reading.task.uncancel() == 0:
            raise BodyTimeout(f"the body was not received within {bodies.timeout:g} s") from None
        raise
    finally:
        reading.done = True
        bodies.give_back(reserved)


async def _read(request: Request, limit: int, bodies: BodiesInFlight, reserved: int) -> bytes:
    # The ASGI messages read straight off `receive`, as Starlette's `stream()`
    # reads them, without an async generator's frame and steps per chunk.
    chunks, size, extra = [], 0, 0
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body larger than {limit} bytes")
            if size > reserved + extra:  # no (or a false) Content-Length: count as it comes
                bodies.take(size - reserved - extra)
                extra = size - reserved
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    finally:
        bodies.give_back(extra)
