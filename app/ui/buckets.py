"""States received per status and per 15 minutes, counted once per closed interval.

The overview's counts and chart add up `events` by `received_at`. Over a month
of a busy sender that is millions of rows, far too many to count on every
render. But events are never changed once committed, and a 15-minute interval
is complete once the commits that could still land in it are over (a state is
answered 503 after WRITE_TIMEOUT_SECONDS, 10 s by default; we wait
`SETTLE_SECONDS`). So a closed interval is counted once and its counts stored
(`bucket_store`); each worker keeps the stored month in memory, and only the
open tail (at most 20 minutes) is counted on each render.

Conflicting second finals are left out: they are stored and flagged but not
applied, so they are not a message's status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Integer, cast, extract, func, select
from sqlalchemy.sql.elements import ColumnElement

from app.models import Event
from app.ui import bucket_store
from app.ui.bucket_store import Counts

BUCKET_SECONDS = 900  # every zone's offset from UTC is a multiple of 15 minutes
SETTLE_SECONDS = 300
KEEP_BUCKETS = 32 * 96  # a little over the longest window shown (30 days)

T = TypeVar("T")


def bucket_of(moment: datetime) -> int:
    return int(moment.timestamp()) // BUCKET_SECONDS


def bucket_start(bucket: int) -> datetime:
    return datetime.fromtimestamp(bucket * BUCKET_SECONDS, UTC)


class EventBuckets:
    """One process's cache of closed intervals: the contiguous range [low, high)."""

    def __init__(self) -> None:
        self._closed: Counts = {}
        self._low = self._high = 0
        self._lock = threading.Lock()
        # What callers derive from the closed buckets [first, closed_end), kept
        # until a new bucket closes (see `derived`).
        self._derived: tuple[tuple[int, int], Any] | None = None

    def counts(self, conn: Connection, first: int, now: datetime) -> Counts:
        """Counts for every bucket from `first` up to now (absent: nothing received)."""
        closed, tail, _ = self.split(conn, first, now)
        return closed | tail

    def split(self, conn: Connection, first: int, now: datetime) -> tuple[Counts, Counts, int]:
        """(closed buckets from `first`, the open tail, where the tail begins)."""
        # Buckets before this one ended at least SETTLE_SECONDS ago: complete.
        closed_end = max(first, int(now.timestamp() - SETTLE_SECONDS) // BUCKET_SECONDS)
        with self._lock:
            self._load(conn, first, closed_end)
            closed = {b: c for b, c in self._closed.items() if first <= b < closed_end}
        return closed, _count(conn, closed_end, None), closed_end

    def derived(self, key: tuple[int, int], make: Callable[[], T]) -> T:
        """`make()`, computed once per `key` (the closed range it was made from)."""
        with self._lock:
            if self._derived is None or self._derived[0] != key:
                self._derived = (key, make())
            value: T = self._derived[1]
            return value

    def _load(self, conn: Connection, first: int, closed_end: int) -> None:
        if self._high == 0 or first > self._high:  # empty, or all kept is older than wanted
            self._closed, self._low, self._high = {}, first, first
        if first < self._low:
            self._closed.update(_closed(conn, first, self._low))
            self._low = first
        if self._high < closed_end:
            self._closed.update(_closed(conn, self._high, closed_end))
            self._high = closed_end
        if self._high - self._low > KEEP_BUCKETS:
            self._low = self._high - KEEP_BUCKETS
            self._closed = {b: c for b, c in self._closed.items() if b >= self._low}


def _closed(conn: Connection, first: int, end: int) -> Counts:
    """Closed intervals [first, end): those stored read, the rest counted and stored
    a piece at a time."""
    known, counts = bucket_store.stored(conn, first, end)
    for low, high in bucket_store.missing(known, first, end):
        counts |= bucket_store.save(conn.engine, low, high, _count(conn, low, high))
    return counts


def _count(conn: Connection, first: int, end: int | None) -> Counts:
    bucket = _bucket_expression(conn.dialect.name)
    query = (
        select(bucket, Event.status, func.count())
        .where(Event.received_at >= bucket_start(first), Event.conflict.is_(False))
        .group_by(bucket, Event.status)
    )
    if end is not None:
        query = query.where(Event.received_at < bucket_start(end))
    found: Counts = {}
    for number, status, count in conn.execute(query):
        found.setdefault(int(number), {})[status] = count
    return found


def _bucket_expression(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":  # stored as text, "YYYY-MM-DD HH:MM:SS.ffffff" in UTC
        unix = cast(func.strftime("%s", Event.received_at), Integer)
        return (unix // BUCKET_SECONDS).label("bucket")
    epoch = extract("epoch", Event.received_at)
    return cast(func.floor(epoch / BUCKET_SECONDS), Integer).label("bucket")
