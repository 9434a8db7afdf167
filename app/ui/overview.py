"""The overview's figures: counts by status, the chart's series, callbacks, pending, heartbeats."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from app import heartbeats
from app.config import Settings
from app.models import Document, InstanceSetting, Message
from app.silence import callback_silence
from app.ui.bucket_store import Counts
from app.ui.buckets import EventBuckets, bucket_of
from app.ui.i18n import FINAL_STATUSES, N_

# Keys the background roles write (app/heartbeats.py).
POLLER_KEY = heartbeats.POLLER_LAST_PASS
CALLBACK_CHECK_KEY = heartbeats.CALLBACK_URL_LAST_CHECK
# The fields of those two records.
HEARTBEAT_FIELDS = ("at", "ok", "asked", "error", "provider_url", "expected_url", "matches")
PENDING_AGES = (
    (timedelta(hours=1), N_("under 1 hour")),
    (timedelta(hours=6), N_("1 to 6 hours")),
    (timedelta(hours=24), N_("6 to 24 hours")),
    (timedelta(hours=72), N_("1 to 3 days")),
)
OLDEST_AGE = N_("over 3 days")
# Not final and not given up: the predicate of the partial index ix_messages_waiting.
WAITING = (Message.final.is_(False), Message.given_up_at.is_(None))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    by_status: dict[str, int]
    final: int
    delivered: int

    @property
    def rate(self) -> float | None:
        return self.delivered / self.final if self.final else None


@dataclass(frozen=True, slots=True)
class Interval:
    label: str
    start: datetime  # UTC
    end: datetime


@dataclass(frozen=True, slots=True)
class Callbacks:
    last_minute: int
    per_minute_5: float
    per_minute_60: float
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    periods: list[Period]
    series: list[tuple[Interval, dict[str, int]]]
    callbacks: Callbacks
    pending: list[tuple[str, int]]
    backlog: int
    given_up: int
    poller: dict[str, Any] | None
    callback_check: dict[str, Any] | None
    silent: bool


def build(
    conn: Connection,
    buckets: EventBuckets,
    settings: Settings,
    zone: ZoneInfo,
    chart: str,
    now: datetime,
) -> Overview:
    periods = _periods(now, zone)
    series = chart_intervals(now, zone, chart)
    first = min(bucket_of(start) for _, start in [*periods, ("", series[0].start)])
    closed, tail, tail_start = buckets.split(conn, first, now)
    running = buckets.derived((first, tail_start), lambda: Running(closed, first, tail_start))
    counts = Totals(running, tail)
    callbacks = _callbacks(conn, now)
    pending, given_up = _pending(conn, now)
    return Overview(
        now=now,
        periods=[_period(name, counts, start) for name, start in periods],
        series=[(interval, counts.between(interval.start, interval.end)) for interval in series],
        callbacks=callbacks,
        pending=pending,
        backlog=sum(count for _, count in pending),
        given_up=given_up,
        poller=heartbeat(conn, POLLER_KEY),
        callback_check=heartbeat(conn, CALLBACK_CHECK_KEY),
        silent=callback_silence(conn, settings, now).silent,
    )


def _periods(now: datetime, zone: ZoneInfo) -> list[tuple[str, datetime]]:
    midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        (N_("Today"), midnight.astimezone(UTC)),
        (N_("7 days"), now - timedelta(days=7)),
        (N_("30 days"), now - timedelta(days=30)),
    ]


def _period(name: str, counts: Totals, start: datetime) -> Period:
    by_status = counts.between(start, None)
    final = sum(by_status.get(status, 0) for status in FINAL_STATUSES)
    return Period(name, dict(sorted(by_status.items())), final, by_status.get("deliver", 0))


class Running:
    """Running totals per status over consecutive buckets: any interval's sum is
    one subtraction per status, however long the interval (a month is 2,880)."""

    def __init__(self, counts: Counts, first: int, end: int) -> None:
        self.first, self.size = first, end - first
        per_status: dict[str, list[int]] = {}
        for bucket, by_status in counts.items():
            if first <= bucket < end:
                for status, count in by_status.items():
                    if status not in per_status:
                        per_status[status] = [0] * self.size
                    per_status[status][bucket - first] += count
        self.prefix = {s: [0, *accumulate(c)] for s, c in sorted(per_status.items())}

    def between(self, start: datetime, end: datetime | None) -> dict[str, int]:
        low = min(max(bucket_of(start) - self.first, 0), self.size)
        high = self.size if end is None else min(max(bucket_of(end) - self.first, 0), self.size)
        sums = {s: prefix[high] - prefix[low] for s, prefix in self.prefix.items()}
        return {s: n for s, n in sums.items() if n}


class Totals:
    """Sums over any interval: the closed buckets' running totals plus the open tail."""

    def __init__(self, running: Running, tail: Counts) -> None:
        self.running, self.tail = running, tail

    def between(self, start: datetime, end: datetime | None) -> dict[str, int]:
        sums = self.running.between(start, end)
        first, last = bucket_of(start), bucket_of(end) if end is not None else None
        for bucket, by_status in self.tail.items():
            if bucket >= first and (last is None or bucket < last):
                for status, count in by_status.items():
                    sums[status] = sums.get(status, 0) + count
        return sums


def chart_intervals(now: datetime, zone: ZoneInfo, chart: str) -> list[Interval]:
    """The last 24 local hours ("day"), or the last 30 local days ("month")."""
    local = now.astimezone(zone)
    if chart == "month":
        today = local.replace(hour=0, minute=0, second=0, microsecond=0)
        starts = [_local_day(today, -days, zone) for days in range(29, -2, -1)]
        return [
            Interval(start.strftime("%d.%m"), start.astimezone(UTC), end.astimezone(UTC))
            for start, end in itertools.pairwise(starts)
        ]
    hour = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    return [
        Interval(
            (hour - timedelta(hours=n)).astimezone(zone).strftime("%H:00"),
            hour - timedelta(hours=n),
            hour - timedelta(hours=n - 1),
        )
        for n in range(23, -1, -1)
    ]


def _local_day(today: datetime, days: int, zone: ZoneInfo) -> datetime:
    # Through the date, so a DST change gives a 23- or 25-hour day, not a shifted midnight.
    day = (today + timedelta(days=days, hours=12)).date()
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _callbacks(conn: Connection, now: datetime) -> Callbacks:
    received = Document.received_at

    def since(minutes: int) -> Any:
        return func.count().filter(received >= now - timedelta(minutes=minutes))

    query = select(since(1), since(5), since(60)).where(received >= now - timedelta(hours=1))
    one, five, sixty = conn.execute(query).one()
    last_at = conn.scalar(select(func.max(received)))
    return Callbacks(one, five / 5, sixty / 60, _aware(last_at))


def _pending(conn: Connection, now: datetime) -> tuple[list[tuple[str, int]], int]:
    """Messages waiting for a final status, by age (first seen), and those given up on."""
    # Cumulative counts in one pass over ix_messages_waiting (the range, always
    # true, is what lets the planner read that index alone), then bands.
    younger = [func.count().filter(Message.first_seen_at >= now - age) for age, _ in PENDING_AGES]
    query = select(*younger, func.count()).where(*WAITING, Message.first_seen_at >= EPOCH)
    cumulative = list(conn.execute(query).one())
    bands = [count - below for count, below in zip(cumulative, [0, *cumulative], strict=False)]
    labels = [label for _, label in PENDING_AGES] + [OLDEST_AGE]
    given_up = conn.scalar(
        select(func.count()).where(Message.final.is_(False), Message.given_up_at.is_not(None))
    )
    return list(zip(labels, bands, strict=True)), given_up or 0


def heartbeat(conn: Connection, key: str) -> dict[str, Any] | None:
    """The JSON object a background role keeps under `key`, with `at` parsed and every
    field of the shared formats present (None when missing); None if there is none."""
    raw = conn.scalar(select(InstanceSetting.value).where(InstanceSetting.key == key))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        at = datetime.fromisoformat(value["at"])
    except (ValueError, TypeError, KeyError):
        return dict.fromkeys(HEARTBEAT_FIELDS) | {"error": "unreadable heartbeat"}
    return {field: value.get(field) for field in HEARTBEAT_FIELDS} | {"at": _aware(at)}


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
