"""Dashboard pages: server time per page on 1,000,000 stored messages, both databases.

    .venv/bin/python -m bench.ui_render [--messages 1000000] [--databases sqlite,postgres]

Fills a fresh database with set-based SQL (no Python loop per row): messages
first seen over the last 30 days (all inside the overview's windows, the worst
case), each with a `send` and, for 49 in 50, a final state (1 in 100 also a
conflicting second final), one callback document per 100 messages, 1 in 20
current statuses from polls. Then starts the service in its own process, signs
in, and times each page from one client on loopback: 3 warm-up requests, then
the median and p95 of 25. The floor is `GET /livez` on the same server in the
same run (a request that touches nothing), so `ratio` is the page's cost over
a bare round trip. The first overview after a start is timed alone, twice:
after the first start, which counts a month of 15-minute intervals and stores
them, and after a restart, which reads what was stored. Pages are asked for in
UTC (the zone cookie), so "the last hour" is one.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
from sqlalchemy import text

from app.config import Settings
from app.db import create_db_engine
from app.migrate import upgrade
from app.ui.state import ZONE_COOKIE
from bench.api_read import scratch_database, service
from bench.run import _free_port
from tests.ui_helpers import sign_in

ADMIN_KEY = "bench-admin-key"
SPAN_SECONDS = 30 * 24 * 3600
WARMUP, REPEAT = 3, 25

# One statement per table, rows from a generated series `g` of 1..:n.
# `:base` is now in Unix seconds; message g was first seen `first` seconds then.
FIRST = "(:base - (:n - g) * :step)"
STATUS = (
    "CASE WHEN g % 50 = 0 THEN 'send' WHEN g % 5 = 1 THEN 'not_deliver' "
    "WHEN g % 5 = 2 THEN 'expired' WHEN g % 97 = 3 THEN 'partly_deliver' ELSE 'deliver' END"
)
SERIES = {
    "postgresql": "generate_series(1, :n) AS s(g)",
    "sqlite": "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) "
    "SELECT g FROM s)",
}
# A Unix time as each database stores a UTCDateTime.
STAMP = {
    "postgresql": "to_timestamp({0})",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', {0}, 'unixepoch') || '.000000'",
}


def statements(dialect: str) -> list[str]:
    series, stamp = SERIES[dialect], STAMP[dialect].format
    first, final_at = stamp(FIRST), stamp(f"({FIRST} + 60)")
    true, false = ("true", "false") if dialect == "postgresql" else ("1", "0")
    return [
        f"""INSERT INTO messages (id_sms, status, final, conflict, status_at, status_time_raw,
                source, num_parts, first_seen_at, updated_at)
            SELECT CAST(1000000000 + g AS TEXT), {STATUS},
                CASE WHEN g % 50 = 0 THEN {false} ELSE {true} END,
                CASE WHEN g % 100 = 7 THEN {true} ELSE {false} END,
                CASE WHEN g % 50 = 0 THEN NULL ELSE {final_at} END,
                CASE WHEN g % 50 = 0 THEN '' ELSE '2026-01-05 10:00:00' END,
                CASE WHEN g % 20 = 0 THEN 'poll' ELSE 'callback' END, 1,
                {first}, {final_at}
            FROM {series}""",
        f"""INSERT INTO events (id_sms, status, time_raw, status_at, source, conflict,
                received_at, document_id)
            SELECT CAST(1000000000 + g AS TEXT), 'send', '', NULL, 'callback', {false},
                {first}, g / 100 + 1
            FROM {series}""",
        f"""INSERT INTO events (id_sms, status, time_raw, status_at, source, conflict,
                received_at, document_id)
            SELECT CAST(1000000000 + g AS TEXT), {STATUS}, '2026-01-05 10:00:00', {final_at},
                CASE WHEN g % 20 = 0 THEN 'poll' ELSE 'callback' END, {false}, {final_at},
                CASE WHEN g % 20 = 0 THEN NULL ELSE g / 100 + 1 END
            FROM {series} WHERE g % 50 <> 0""",
        f"""INSERT INTO events (id_sms, status, time_raw, status_at, source, conflict,
                received_at, document_id)
            SELECT CAST(1000000000 + g AS TEXT), 'expired', '2026-01-05 10:30:00', {final_at},
                'callback', {true}, {final_at}, NULL
            FROM {series} WHERE g % 100 = 7""",
        f"""INSERT INTO documents (received_at, remote_addr, body, outcome, acked_ids,
                state_count, duplicate_count)
            SELECT {final_at}, '203.0.113.5',
                CAST('<request><state id_sms="1" time="">send</state></request>' AS {
            "BYTEA" if dialect == "postgresql" else "BLOB"
        }),
                'stored', '', 100, 0
            FROM {series} WHERE g % 100 = 0""",
    ]


def fill(database_url: str, messages: int) -> float:
    started = time.perf_counter()
    settings = Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
    upgrade(settings)
    engine = create_db_engine(settings)
    now = datetime.now(UTC).timestamp()
    params = {"n": messages, "base": int(now), "step": SPAN_SECONDS / messages}
    with engine.begin() as conn:
        for statement in statements(engine.dialect.name):
            conn.execute(text(statement), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


Timing = tuple[list[float], float]  # wall ms per request, server CPU ms per request


def timed(
    server: psutil.Process, call: Callable[[], httpx.Response], repeat: int = REPEAT
) -> Timing:
    """Wall time of each request, and the server process's CPU time per request
    (user + system; all of the work on SQLite, the Python side on PostgreSQL).
    CPU time hardly moves when other processes compete for the cores; wall time does."""
    for _ in range(WARMUP):
        call()
    times = []
    cpu_before = sum(server.cpu_times()[:2])
    for _ in range(repeat):
        started = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (response.status_code, response.text[:300])
    cpu = (sum(server.cpu_times()[:2]) - cpu_before) * 1000 / repeat
    return times, cpu


def server_process(port: int) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        if str(port) in (process.info["cmdline"] or []) and "uvicorn" in process.info["cmdline"]:
            return process
    raise RuntimeError("the service's process was not found")


def pages(messages: int) -> dict[str, str]:
    middle = str(1000000000 + messages // 2)
    pasted = " ".join(str(1000000000 + g) for g in range(1, messages, messages // 100))
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    return {
        "overview (24 h chart)": "/ui/",
        "overview (30 d chart)": "/ui/?chart=month",
        "overview figures (refresh)": "/ui/overview/figures",
        "messages, no filter": "/ui/messages",
        "messages, status=expired": "/ui/messages?status=expired",
        "messages, final=no": "/ui/messages?final=no",
        "messages, conflict=yes": "/ui/messages?conflict=yes",
        "messages, source=poll": "/ui/messages?source=poll",
        "messages, changed in the last hour": f"/ui/messages?since={hour_ago}",
        "messages, 100 pasted ids": "/ui/messages?" + httpx.QueryParams({"ids": pasted}).__str__(),
        "message detail (admin, with documents)": f"/ui/messages/{middle}",
        "callback URL": "/ui/callback-url",
    }


@contextmanager
def signed_in(database_url: str) -> Iterator[tuple[httpx.Client, int]]:
    """The service started on `database_url`, and a client signed in as an admin, in UTC."""
    port = _free_port()
    extra = {"ADMIN_API_KEYS": ADMIN_KEY, "PUBLIC_URL": "https://bench.example"}
    with (
        service(database_url, port, **extra) as url,
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        assert sign_in(client, ADMIN_KEY).status_code == 303
        client.cookies.set(ZONE_COOKIE, "UTC")
        yield client, port


def first_overview(database_url: str) -> float:
    """Wall ms of the first overview right after a start (it waits for the warm-up
    begun at start)."""
    with signed_in(database_url) as (client, _):
        started = time.perf_counter()
        assert client.get("/ui/").status_code == 200
        return (time.perf_counter() - started) * 1000


def measure(database_url: str, messages: int) -> list[tuple[str, Timing]]:
    first_start = first_overview(database_url)
    restart = first_overview(database_url)
    with signed_in(database_url) as (client, port):
        server = server_process(port)
        results = [("floor: GET /livez", timed(server, lambda: client.get("/livez")))]
        results.append(("overview, first after the first start", ([first_start], float("nan"))))
        results.append(("overview, first after a restart", ([restart], float("nan"))))
        for label, path in pages(messages).items():
            results.append((label, timed(server, lambda path=path: client.get(path))))  # type: ignore[misc]
    return results


def report(kind: str, messages: int, fill_seconds: float, results: list[tuple[str, Timing]]) -> str:
    floor = statistics.median(results[0][1][0])
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        f"### {kind}: {messages:,} messages (filled in {fill_seconds:.0f} s; load average {load})",
        "",
        "| page | median ms | p95 ms | ratio to floor | server CPU ms per request |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, (times, cpu) in results:
        ordered = sorted(times)
        median = statistics.median(ordered)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        cpu_text = "" if math.isnan(cpu) else f"{cpu:.1f}"
        lines.append(f"| {label} | {median:.1f} | {p95:.1f} | {median / floor:.1f} | {cpu_text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--existing", help="measure this filled database instead (no fill)")
    args = parser.parse_args()
    if args.existing:
        print(
            report(
                args.existing.split(":")[0], args.messages, 0, measure(args.existing, args.messages)
            )
        )
        return
    for kind in args.databases.split(","):
        if kind == "postgres":
            with scratch_database(args.postgres) as url:
                seconds = fill(url, args.messages)
                print(report("PostgreSQL", args.messages, seconds, measure(url, args.messages)))
        else:
            with tempfile.TemporaryDirectory() as directory:
                url = f"sqlite:///{Path(directory) / 'ui-bench.db'}"
                seconds = fill(url, args.messages)
                print(report("SQLite", args.messages, seconds, measure(url, args.messages)))


if __name__ == "__main__":
    main()
