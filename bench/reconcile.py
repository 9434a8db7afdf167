"""Reconciling a day of 100,000 message parts against a store of 1,000,000 messages.

    .venv/bin/python -m bench.reconcile --database postgres
    .venv/bin/python -m bench.reconcile --database sqlite

The store (messages with one event each) is generated with set-based SQL
(generate_series on PostgreSQL, a recursive CTE on SQLite). The provider's
day: PARTS / 2 messages of 2 parts each, sent through the day (every minute
has some), of which
- 40% are in the store already final with the same status (nothing to do),
- 15% are in the store as `send` and final at the provider (updated),
- 5% are in the store final with another final status (flagged),
- 40% were never seen (added).
The simulator renders the stats.php answers once, before timing; during the
run a MockTransport hands them out, so the figure is ours: the client's
parsing, the comparison, the writes. Each run is a fresh process (its peak
RSS is reported); run 1 does the work above, runs 2.. repeat it on the
reconciled store (the steady state of the schedule, which re-reads today
every RECONCILE_INTERVAL_MINUTES).

The floor, measured in the same run: reading the same ids (messages: id_sms,
status, final) in one statement, through the same engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import pickle
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine, select, text

from app.config import Settings
from app.db import create_db_engine
from app.migrate import upgrade
from app.models import Message
from app.provider import TargetSMSClient, stats_request
from app.reconcile import Reconciler, day_windows
from app.reconcile_store import MESSAGES
from app.simulator import SimulatorState, create_app
from app.store import one_of
from bench.api_read import scratch_database

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = date(2026, 11, 20)
API_URL = "http://provider.bench/xml/"
STORE_SQL = {
    "postgresql": [
        "INSERT INTO messages (id_sms, status, final, conflict, status_at, status_time_raw,"
        " source, num_parts, price, first_seen_at, updated_at)"
        " SELECT g::text, CASE WHEN g % 4 = 0 THEN 'send' ELSE 'deliver' END, g % 4 <> 0,"
        " false, CASE WHEN g % 4 = 0 THEN NULL ELSE TIMESTAMPTZ '2026-11-20 07:00:00Z' END,"
        " CASE WHEN g % 4 = 0 THEN '' ELSE '2026-11-20 10:00:00' END, 'callback', 2, '1.15',"
        " TIMESTAMPTZ '2026-11-20 07:00:00Z', TIMESTAMPTZ '2026-11-20 07:00:00Z'"
        " FROM generate_series(1, :n) AS g",
        "INSERT INTO events (id_sms, status, time_raw, status_at, source, conflict, num_parts,"
        " price, received_at) SELECT id_sms, status, status_time_raw, status_at, 'callback',"
        " false, 2, '1.15', first_seen_at FROM messages ORDER BY id",
        "ANALYZE",
    ],
    "sqlite": [
        "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n)"
        " INSERT INTO messages (id_sms, status, final, conflict, status_at, status_time_raw,"
        " source, num_parts, price, first_seen_at, updated_at)"
        " SELECT CAST(g AS TEXT), CASE WHEN g % 4 = 0 THEN 'send' ELSE 'deliver' END,"
        " g % 4 <> 0, 0, CASE WHEN g % 4 = 0 THEN NULL ELSE '2026-11-20 07:00:00.000000' END,"
        " CASE WHEN g % 4 = 0 THEN '' ELSE '2026-11-20 10:00:00' END, 'callback', 2, '1.15',"
        " '2026-11-20 07:00:00.000000', '2026-11-20 07:00:00.000000' FROM s",
        "INSERT INTO events (id_sms, status, time_raw, status_at, source, conflict, num_parts,"
        " price, received_at) SELECT id_sms, status, status_time_raw, status_at, 'callback',"
        " 0, 2, '1.15', first_seen_at FROM messages ORDER BY id",
        "ANALYZE",
    ],
}


def settings_for(url: str, window_minutes: int = 1440) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        reconcile_window_minutes=window_minutes,
        targetsms_login="bench",
        targetsms_password="bench",  # noqa: S106
        targetsms_api_url=API_URL,
    )


def build_store(engine: Engine, count: int) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        for sql in STORE_SQL[engine.dialect.name]:
            conn.execute(text(sql), {"n": count} if ":n" in sql else {})
    return time.perf_counter() - started


def provider_day(store: int, parts: int) -> tuple[SimulatorState, list[str]]:
    """The simulator's record of the day (see the module docstring); the ids it holds."""
    state = SimulatorState("bench", "bench")
    count = parts // 2
    ids = []
    for n in range(count):
        share = n * 100 // count
        if share < 40:  # in the store, final, same status: g % 4 != 0
            id_sms = str(store - 4 * n - 1)
        elif share < 55:  # in the store as send: g % 4 == 0
            id_sms = str(store - 4 * n)
        elif share < 60:  # in the store final (deliver); not_deliver at the provider
            id_sms = str(store - 4 * n - 2)
        else:  # never seen
            id_sms = str(store + n + 1)
        state.register(id_sms, num_parts=2, price="1.15")
        minute = n * 1440 // count
        state.describe(id_sms, time=f"{DAY} {minute // 60:02d}:{minute % 60:02d}:00")
        final = "not_deliver" if 55 <= share < 60 else "deliver"
        state.advance(id_sms, final, f"{DAY} 10:00:00")
        ids.append(id_sms)
    return state, ids


async def render(state: SimulatorState, window_minutes: int) -> dict[str, bytes]:
    """Every window's stats.php answer, keyed by the request's <stats> element."""
    transport = httpx.ASGITransport(app=create_app(state))
    answers: dict[str, bytes] = {}
    async with httpx.AsyncClient(transport=transport) as http:
        for window in day_windows(DAY, window_minutes):
            element = stats_request(window.start, window.stop)
            body = (
                '<?xml version="1.0" encoding="utf-8"?><request><security>'
                '<login value="bench"/><password value="bench"/></security>'
                f"{element}</request>"
            )
            response = await http.post(f"{API_URL}stats.php", content=body)
            answers[element] = response.content
    return answers


def _stats_element(request: httpx.Request) -> str:
    body = request.content.decode()
    return body[body.index("<stats ") : body.index("/>", body.index("<stats ")) + 2]


def child(url: str, window_minutes: int, answers_path: str, queue: Any) -> None:
    """One reconciliation in a fresh process: seconds, counts, peak RSS."""
    answers: dict[str, bytes] = pickle.loads(Path(answers_path).read_bytes())  # noqa: S301
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=answers[_stats_element(request)])
    )
    settings = settings_for(url, window_minutes)
    engine = create_db_engine(settings)

    async def run() -> Any:
        client = TargetSMSClient(
            API_URL, "bench", SecretStr("bench"), timeout=60, transport=transport
        )
        async with client:
            return await Reconciler(settings, engine, client).run([DAY])

    started = time.perf_counter()
    try:
        (result,) = asyncio.run(run())
    except Exception as exc:  # the parent waits on the queue: always answer it
        queue.put((0.0, {}, repr(exc), 0.0))
        raise
    seconds = time.perf_counter() - started
    engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((seconds, result.tally.values(), result.error, peak_mb))


def reconcile_once(
    url: str, window_minutes: int, answers_path: str
) -> tuple[float, dict[str, Any], float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=child, args=(url, window_minutes, answers_path, queue))
    process.start()
    seconds, tally, error, peak_mb = queue.get(timeout=1800)
    process.join()
    assert error is None, error
    return seconds, tally, peak_mb


def floor_once(engine: Engine, ids: list[str]) -> float:
    started = time.perf_counter()
    with engine.connect() as conn:
        query = select(Message.id_sms, Message.status, Message.final).where(
            one_of(MESSAGES.c.id_sms, ids, conn)
        )
        found = conn.execute(query).all()
    seconds = time.perf_counter() - started
    assert len(found) >= len(ids) * 6 // 10
    return seconds


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/bench.db"
        return
    with scratch_database(ADMIN_URL) as url:
        yield url


def run(kind: str, store: int, parts: int, window_minutes: int, runs: int) -> None:
    with database(kind) as url, tempfile.TemporaryDirectory() as scratch:
        upgrade(settings_for(url))
        engine = create_db_engine(settings_for(url))
        print(f"{kind}: store of {store:,} messages built in {build_store(engine, store):.1f} s")
        state, ids = provider_day(store, parts)
        answers = asyncio.run(render(state, window_minutes))
        size = sum(len(body) for body in answers.values())
        print(
            f"provider day: {parts:,} parts, {len(ids):,} messages, {len(answers)} answers"
            f" of {size / 1e6:.1f} MB in all"
        )
        path = Path(scratch) / "answers.pickle"
        path.write_bytes(pickle.dumps(answers))
        del answers, state
        floors = [floor_once(engine, ids) for _ in range(3)]
        for number in range(1, runs + 1):
            seconds, tally, peak_mb = reconcile_once(url, window_minutes, str(path))
            floors.append(floor_once(engine, ids))
            counts = {k: tally[k] for k in ("parts", "messages", "added", "updated", "flagged")}
            print(
                f"run {number}: {seconds:.2f} s, {parts / seconds:,.0f} parts/s,"
                f" peak RSS {peak_mb:.0f} MB; {counts}"
            )
        floor = statistics.median(floors)
        print(
            f"floor (read the same {len(ids):,} ids): median {floor:.3f} s"
            f" ({min(floors):.3f}-{max(floors):.3f}), {parts / floor:,.0f} parts/s"
        )
        engine.dispose()
    print(f"finished {datetime.now():%Y-%m-%d %H:%M}, load average {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--store", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=100_000)
    parser.add_argument(
        "--window-minutes",
        type=int,
        default=Settings.model_fields["reconcile_window_minutes"].default,
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    run(args.database, args.store, args.parts, args.window_minutes, args.runs)


if __name__ == "__main__":
    main()
