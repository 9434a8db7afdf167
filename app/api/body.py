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

from starlette.requests import Request

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


class BodyBudget:
    """Bytes held by bodies being read, process-wide (one event loop, no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise BodiesBusy(
                "too many request bodies are being received; send again later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


async def read_body(
    request: Request, limit: int, timeout: float | None = None, budget: BodyBudget | None = None
) -> bytes:
    """The body, or `BodyRefused`: larger than `limit` bytes (whether or not
    Content-Length was sent), slower than `timeout` seconds, or over `budget`."""
    budget = budget or BodyBudget(limit)
    declared = request.headers.get("content-length", "")
    # A declared length is taken from the budget at once: refused before any read.
    reserved = int(declared) if declared.isdigit() else 0
    if reserved > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes")
    budget.take(reserved)
    try:
        async with asyncio.timeout(timeout):
            return await _read(request, limit, budget, reserved)
    except TimeoutError:
        raise BodyTimeout(f"the body was not received within {timeout:g} s") from None
    finally:
        budget.give_back(reserved)


async def _read(request: Request, limit: int, budget: BodyBudget, reserved: int) -> bytes:
    chunks, size, extra = [], 0, 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body larger than {limit} bytes")
            if size > reserved + extra:  # no (or a false) Content-Length: count as it comes
                budget.take(size - reserved - extra)
                extra = size - reserved
            chunks.append(chunk)
    finally:
        budget.give_back(extra)
    return b"".join(chunks)
