"""The database floor: the same rows, written straight to the database, one connection.

Each transaction holds what one callback document of `--batch` states leaves in
our schema: one `documents` row (the raw body), and `--batch` rows each in
`events` and `messages`, with ids never used before. No lookups, no locks, no
conflict handling: the plain cost of getting those rows committed, fsync on.

- SQLite (WAL, synchronous=FULL, as the service runs it): one `BEGIN
  IMMEDIATE` transaction per batch, with `executemany` or `values` (one
  INSERT per table with a multi-row VALUES, as the service's store does).
- PostgreSQL: one of `executemany` (psycopg 3 pipelines it), `unnest` (one
  INSERT per table with arrays), or `copy` (COPY into the tables).

`--method fastest` tries each of the database's ways briefly and keeps the
fastest, so the floor is the quickest way we know, not only the plainest.

    python -m bench.db_floor --url postgresql://... --batch 100 --seconds 10

prints one JSON line with the method, transactions/s and states/s. The tables
must exist (migrated) and should be empty.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg

from bench.loadgen import callback_body

EVENT_COLUMNS = (
    "id_sms, status, time_raw, status_at, source, conflict, num_parts, price, received_at,"
    " document_id"
)
MESSAGE_COLUMNS = (
    "id_sms, status, final, conflict, status_at, status_time_raw, source, num_parts, price,"
    " first_seen_at, updated_at"
)
DOCUMENT_COLUMNS = (
    "received_at, remote_addr, body, outcome, acked_ids, state_count, duplicate_count"
)
TIME_RAW = "2024-05-01 10:00:00"
STATUS_AT = datetime(2024, 5, 1, 7, 0, tzinfo=UTC)
PG_METHODS = ("executemany", "unnest", "copy")
SQLITE_METHODS = ("executemany", "values")

Batch = tuple[dict[str, object], list[tuple[object, ...]], list[tuple[object, ...]]]
Writer = Callable[[Batch], None]


def batches(size: int, id_base: int, sqlite: bool) -> Iterator[Batch]:
    """(document, events without document_id, messages), with fresh ids each time."""
    for n in itertools.count():
        first = id_base + n * size
        ids = [str(first + k) for k in range(size)]
        now = datetime.now(UTC)
        when, status_at = (
            (_sqlite_time(now), _sqlite_time(STATUS_AT)) if sqlite else (now, STATUS_AT)
        )
        document = {
            "received_at": when,
            "remote_addr": "127.0.0.1",
            "body": callback_body(first, size),
            "outcome": "stored",
            "acked_ids": " ".join(ids),
            "state_count": size,
            "duplicate_count": 0,
        }
        events = [
            (i, "deliver", TIME_RAW, status_at, "callback", False, None, None, when) for i in ids
        ]
        messages = [
            (i, "deliver", True, False, status_at, TIME_RAW, "callback", None, None, when, when)
            for i in ids
        ]
        yield document, events, messages


def _sqlite_time(value: datetime) -> str:
    # How app.models.UTCDateTime stores it on SQLite: naive UTC.
    return value.replace(tzinfo=None).isoformat(sep=" ")


def sqlite_writer(path: str, method: str) -> Writer:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    insert_document = (
        f"INSERT INTO documents ({DOCUMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
    )

    def insert(table: str, columns: str, rows: list[tuple[object, ...]]) -> None:
        row = f"({', '.join('?' * len(rows[0]))})"
        if method == "executemany":
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES {row}", rows)
            return
        values = ", ".join([row] * len(rows))  # a batch's 100 rows: far below SQLite's limits
        conn.execute(
            f"INSERT INTO {table} ({columns}) VALUES {values}",
            list(itertools.chain.from_iterable(rows)),
        )

    def write(batch: Batch) -> None:
        document, events, messages = batch
        conn.execute("BEGIN IMMEDIATE")
        document_id = conn.execute(insert_document, tuple(document.values())).fetchone()[0]
        insert("events", EVENT_COLUMNS, [(*row, document_id) for row in events])
        insert("messages", MESSAGE_COLUMNS, messages)
        conn.execute("COMMIT")

    return write


def postgres_writer(url: str, method: str) -> Writer:
    conn = psycopg.connect(url)
    insert_document = (
        f"INSERT INTO documents ({DOCUMENT_COLUMNS})"
        " VALUES (%(received_at)s, %(remote_addr)s, %(body)s, %(outcome)s, %(acked_ids)s,"
        " %(state_count)s, %(duplicate_count)s) RETURNING id"
    )
    store = {"executemany": _pg_executemany, "unnest": _pg_unnest, "copy": _pg_copy}[method]

    def write(batch: Batch) -> None:
        document, events, messages = batch
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(insert_document, document)
            row = cur.fetchone()
            assert row is not None
            store(cur, [(*event, row[0]) for event in events], messages)

    return write


def _pg_executemany(
    cur: psycopg.Cursor[object],
    events: list[tuple[object, ...]],
    messages: list[tuple[object, ...]],
) -> None:
    cur.executemany(
        f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})", events
    )
    cur.executemany(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})", messages
    )


EVENT_TYPES = (
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "bool",
    "int",
    "text",
    "timestamptz",
    "bigint",
)
MESSAGE_TYPES = (
    "text",
    "text",
    "bool",
    "bool",
    "timestamptz",
    "text",
    "text",
    "int",
    "text",
    "timestamptz",
    "timestamptz",
)


def _pg_unnest(
    cur: psycopg.Cursor[object],
    events: list[tuple[object, ...]],
    messages: list[tuple[object, ...]],
) -> None:
    for table, columns, types, rows in (
        ("events", EVENT_COLUMNS, EVENT_TYPES, events),
        ("messages", MESSAGE_COLUMNS, MESSAGE_TYPES, messages),
    ):
        arrays = [list(column) for column in zip(*rows, strict=True)]
        casts = ", ".join(f"%s::{kind}[]" for kind in types)
        cur.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({casts})", arrays)


def _pg_copy(
    cur: psycopg.Cursor[object],
    events: list[tuple[object, ...]],
    messages: list[tuple[object, ...]],
) -> None:
    for table, columns, rows in (
        ("events", EVENT_COLUMNS, events),
        ("messages", MESSAGE_COLUMNS, messages),
    ):
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def measure(
    write: Writer, size: int, seconds: float, id_base: int, sqlite: bool
) -> dict[str, float]:
    transactions = 0
    source = batches(size, id_base, sqlite)
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        write(next(source))
        transactions += 1
    return {
        "transactions": transactions,
        "seconds": elapsed,
        "transactions_per_s": transactions / elapsed,
        "states_per_s": transactions * size / elapsed,
    }


def writer_for(url: str, method: str) -> Writer:
    if url.startswith("sqlite"):
        return sqlite_writer(url.split(":///", 1)[1], method)
    return postgres_writer(url, method)


def main() -> None:
    parser = argparse.ArgumentParser(description="the database floor")
    parser.add_argument("--url", required=True, help="sqlite:///PATH or postgresql://...")
    parser.add_argument("--batch", type=int, default=100, help="states per transaction")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--method", default="fastest", choices=sorted({"fastest", *PG_METHODS, *SQLITE_METHODS})
    )
    parser.add_argument("--trial-seconds", type=float, default=3)
    parser.add_argument("--id-base", type=int, default=500_000_000_000_000)
    args = parser.parse_args()
    sqlite = args.url.startswith("sqlite")
    trials: dict[str, float] = {}
    methods = SQLITE_METHODS if sqlite else PG_METHODS
    method = args.method
    if method != "fastest" and method not in methods:
        parser.error(f"{method} is not a way for this database: {', '.join(methods)}")
    if method == "fastest":
        for n, candidate in enumerate(methods):
            base = args.id_base + (n + 1) * 10**13
            result = measure(
                writer_for(args.url, candidate), args.batch, args.trial_seconds, base, sqlite
            )
            trials[candidate] = result["states_per_s"]
        method = max(trials, key=lambda name: trials[name])
    result = measure(writer_for(args.url, method), args.batch, args.seconds, args.id_base, sqlite)
    print(json.dumps({"method": method, "batch": args.batch, "trials": trials, **result}))


if __name__ == "__main__":
    main()
