"""Read API figures over a large table: list pages, lookups, stats, and how
fast a consumer can follow the change feed from the start.

    .venv/bin/python bench/api_read.py [--messages 100000] [--url postgresql://postgres@127.0.0.1/postgres]

Creates a database of its own on that server (dropped afterwards), fills it
through `store.store_batch` (each message: `send`, then a final status; 1 in 50 also
a conflicting second final), starts the service under uvicorn in its own
process, and times requests from one client connection.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import psycopg

from app.config import Settings
from app.db import create_db_engine, write_transaction
from app.ingest import Submission
from app.migrate import upgrade
from app.protocol import IncomingState
from app.store import store_batch

KEY = "bench-read-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FINALS = ("deliver", "deliver", "deliver", "not_deliver", "expired")


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"tsr_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(settings: Settings, messages: int) -> int:
    engine = create_db_engine(settings)
    now = datetime.now(UTC)
    states = 0
    for start in range(0, messages, 5000):
        ids = [str(10**9 + n) for n in range(start, min(start + 5000, messages))]
        for batch in _rounds(ids):
            with write_transaction(engine) as conn:
                store_batch(conn, [Submission(batch, "callback", received_at=now)], now)
            states += len(batch)
    engine.dispose()
    return states


def _rounds(ids: list[str]) -> Iterator[list[IncomingState]]:
    yield [IncomingState(i, "send", "", None) for i in ids]
    yield [IncomingState(i, random.choice(FINALS), "2024-03-01 12:00:00", None) for i in ids]
    yield [IncomingState(i, "expired", "2024-03-01 12:30:00", None) for i in ids[::50]]


@contextmanager
def service(database_url: str, port: int, **extra: str) -> Iterator[str]:
    env = os.environ | {"DATABASE_URL": database_url, "API_KEYS": KEY, "ACCESS_LOG": "false"}
    env |= extra  # more settings (bench/ui_render.py: ADMIN_API_KEYS)
    command = [sys.executable, "-m", "uvicorn", "app.main:app_from_environment", "--factory"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/openapi.json")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def timed(label: str, repeat: int, call: Callable[[], httpx.Response]) -> None:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:<44} median {statistics.median(times):7.2f} ms   p99 {p99:7.2f} ms")


def follow_feed(client: httpx.Client, limit: int) -> None:
    started, count, after = time.perf_counter(), 0, None
    while True:
        params: dict[str, str | int] = {"limit": limit} | ({"after": after} if after else {})
        page = client.get("/api/v1/changes", params=params, headers=AUTH).json()
        if not page["items"]:
            break
        count += len(page["items"])
        after = page["next_cursor"]
    elapsed = time.perf_counter() - started
    print(
        f"feed from the start, limit={limit:<5}: {count} states in {elapsed:.1f} s "
        f"= {count / elapsed:,.0f} states/s"
    )


def walk_list(client: httpx.Client, limit: int) -> None:
    started, count, cursor = time.perf_counter(), 0, None
    while True:
        params: dict[str, str | int] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/messages", params=params, headers=AUTH).json()
        count += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    elapsed = time.perf_counter() - started
    print(
        f"list walk, limit={limit:<5}: {count} messages in {elapsed:.1f} s "
        f"= {count / elapsed:,.0f} messages/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--port", type=int, default=18437)
    args = parser.parse_args()
    with scratch_database(args.url) as database_url:
        settings = Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
        upgrade(settings)
        started = time.perf_counter()
        states = fill(settings, args.messages)
        print(
            f"filled {args.messages} messages, {states} states "
            f"in {time.perf_counter() - started:.0f} s"
        )
        with service(database_url, args.port) as url, httpx.Client(base_url=url) as client:
            some_id = str(10**9 + args.messages // 2)
            timed(
                "GET /messages/{id} (3 events)",
                500,
                lambda: client.get(f"/api/v1/messages/{some_id}", headers=AUTH),
            )
            timed(
                "GET /messages?limit=100 (first page)",
                200,
                lambda: client.get("/api/v1/messages", headers=AUTH),
            )
            timed(
                "GET /messages?limit=1000 (first page)",
                50,
                lambda: client.get("/api/v1/messages?limit=1000", headers=AUTH),
            )
            timed(
                "GET /messages?status=expired&limit=100",
                200,
                lambda: client.get("/api/v1/messages?status=expired", headers=AUTH),
            )
            timed(
                "GET /changes?limit=1000 (first page)",
                50,
                lambda: client.get("/api/v1/changes?limit=1000", headers=AUTH),
            )
            timed("GET /stats (all time)", 20, lambda: client.get("/api/v1/stats", headers=AUTH))
            walk_list(client, 1000)
            follow_feed(client, 1000)
            follow_feed(client, 100)


if __name__ == "__main__":
    main()
