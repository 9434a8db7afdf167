"""Shared set-up for the reconciliation tests: the simulator in process, and a run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.provider import TargetSMSClient
from app.reconcile import DayResult, Reconciler
from app.simulator import SimulatorState, create_app
from tests.sim_helpers import LOGIN, PASSWORD

DAY = date(2026, 11, 20)
API_URL = "http://provider.test/xml/"
Handler = Callable[[httpx.Request], httpx.Response | None]


def sent(
    state: SimulatorState, at: str, count: int = 1, *, originator: str = "SHOP", **extra: object
) -> list[str]:
    """`count` messages sent at `at` (wall clock on DAY) whose statuses are never pushed."""
    ids = state.create(count, **extra)  # type: ignore[arg-type]
    when = at if " " in at else f"{DAY} {at}"
    for id_sms in ids:
        state.describe(id_sms, time=when, originator=originator, text="Your code is 1234")
        state.lose(id_sms)
    return ids


class Provider(httpx.AsyncBaseTransport):
    """The simulator's app, with an optional `fault` that answers some requests itself."""

    def __init__(self, state: SimulatorState, fault: Handler | None = None) -> None:
        self.asgi = httpx.ASGITransport(app=create_app(state))
        self.fault, self.requests = fault, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        answer = self.fault(request) if self.fault else None
        return answer if answer is not None else await self.asgi.handle_async_request(request)


def reconcile(
    settings: Settings,
    engine: Engine,
    transport: httpx.AsyncBaseTransport,
    days: list[date] | None = None,
    *,
    owner: str | None = None,
) -> list[DayResult]:
    async def main() -> list[DayResult]:
        client = TargetSMSClient(
            API_URL,
            LOGIN,
            SecretStr(PASSWORD),
            timeout=5.0,
            retries=1,
            backoff_base=0.001,
            backoff_cap=0.002,
            transport=transport,
        )
        async with client:
            return await Reconciler(settings, engine, client, owner=owner).run(days or [DAY])

    return asyncio.run(main())
