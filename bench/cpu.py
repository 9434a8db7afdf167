"""CPU per callback, in process: the figure a busy machine disturbs least.

    python -m bench.cpu --database sqlite --states 1 --requests 3000

Drives the app through ASGI directly (no uvicorn, no sockets), 32 requests in
flight as wrk keeps 32 connections, and reports the CPU time (user + system,
every thread of the process and of its children: SQLite commits in a child
process of its own) per request, for the bare
FastAPI floor (`bench.floor_app`) and for the service, interleaved run by run
so that a change in the machine's load falls on both. It leaves out what
uvicorn and the sockets cost, which the floor and the service share, so the
ratio floor / service here is an upper bound of the ratio wrk can show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from bench.floor_app import create_floor_app
from bench.run import PATH, TOKEN, fresh_database

CONCURRENCY = 32
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def document(first: int, states: int) -> bytes:
    rows = "".join(
        f'<state id_sms="{first + k}" time="2024-05-01 10:00:00">deliver</state>'
        for k in range(states)
    )
    return f'<?xml version="1.0" encoding="utf-8"?><request>{rows}</request>'.encode()


async def call(app: ASGIApp, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/xml"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(
    app: ASGIApp, ids: itertools.count[int], states: int, requests: int
) -> tuple[float, float]:
    """`requests` callbacks, CONCURRENCY at a time: the CPU seconds per request
    of this process and its children, and the event loop thread's share of
    them (the rest: other threads, and SQLite's commit process)."""
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status = await call(app, document(next(ids) * states, states))
            if status != 200:
                raise SystemExit(f"answer {status}")

    started, loop_started = tree_cpu(), thread_cpu(threading.get_native_id())
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    elapsed = tree_cpu() - started
    loop = thread_cpu(threading.get_native_id()) - loop_started
    return elapsed / requests, loop / elapsed


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and its running children."""
    me = psutil.Process()
    return sum(sum(process.cpu_times()[:2]) for process in [me, *me.children(recursive=True)])


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process (Linux: /proc)."""
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Runs = dict[str, list[tuple[float, float]]]


async def measure(url: str, states: int, requests: int, runs: int, access_log: bool) -> Runs:
    os.environ.update({"DATABASE_URL": url, "CALLBACK_TOKEN": TOKEN})
    os.environ["ACCESS_LOG"] = "true" if access_log else "false"
    from app.config import Settings
    from app.logs import configure_logging
    from app.main import create_app

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)  # as `serve` does
    service = create_app(settings)
    floor = create_floor_app()
    ids = itertools.count(1)
    results: Runs = {"floor": [], "service": []}
    async with service.router.lifespan_context(service):
        # The dashboard's one-off count of a month at start, and a first cost
        # computation, in threads of their own: not a callback's cost.
        service.state.ui.settle(timeout=60)
        for app in (floor, service):  # warm-up
            await drive(app, ids, states, 2000)
        for _ in range(runs):
            for name, app in (("floor", floor), ("service", service)):
                results[name].append(await drive(app, ids, states, requests))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--states", type=int, default=1)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--access-log", default="off", choices=["on", "off"])
    args = parser.parse_args()
    out = Path("bench/out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with fresh_database(args.database, out, f"cpu_{args.database}") as url:
        log = (
            out / f"cpu_{args.database}.log"
        )  # the service's log lines, as a server's go to a file
        with open(log, "w") as sink, contextlib.redirect_stderr(sink):
            results = asyncio.run(
                measure(url, args.states, args.requests, args.runs, args.access_log == "on")
            )
    floor = statistics.median(cpu for cpu, _ in results["floor"])
    service = statistics.median(cpu for cpu, _ in results["service"])
    print(
        f"{args.database} {args.states}-state, access log {args.access_log}: "
        f"floor {floor * 1e6:,.0f} us, "
        f"service {service * 1e6:,.0f} us per request (medians of {args.runs}); "
        f"floor / service {floor / service:.2f}"
    )
    for name, measured in results.items():
        print(f"  {name} runs, us:", ", ".join(f"{cpu * 1e6:,.0f}" for cpu, _ in measured))
    shares = ", ".join(f"{share:.0%}" for _, share in results["service"])
    print(f"  service runs, the event loop thread's share of the CPU: {shares}")


if __name__ == "__main__":
    main()
