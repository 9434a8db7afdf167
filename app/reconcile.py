"""Reconciliation: the provider's statistics (stats.php) against what we hold.

stats.php lists one row per message *part* sent in a window, with provider
wall-clock times in the account's zone, to the minute. For each day:

1. take the day's lease (`reconcile_store.claim_day`): one reconciler per day;
2. ask stats.php window by window, RECONCILE_WINDOW_MINUTES at first. A
   window whose answer is refused, fails, or comes back shorter than it says
   is split in halves, down to one minute. A one-minute window that still
   fails ends the day with an error, so a provider that is down costs about
   log2(1440) = 11 requests, not 1440. Refused credentials, a blocked account
   or a refused date end the run at once: splitting cannot help them;
3. group each window's rows by id_sms and compare with what we hold:
   - an id we never saw is stored as a new message (source "reconcile");
   - final there and not final here (or only tracked here): the provider's
     state is stored through the write path of callbacks and polls;
   - final here with another final status there: stored the same way, where
     the status rules keep ours and flag the conflict;
   and keep the context (sender, operator, masked phone, send time, parts,
   prices; the text only with RECONCILE_STORE_TEXT);
4. close the day's report row with the counts, or the error.

A message's parts are sent together and carry one send time, so a window
(by send time) holds all of a message's parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import write_transaction
from app.ingest import Row
from app.provider import (
    AccountBlocked,
    AuthenticationFailed,
    BadDate,
    NoPostData,
    ProviderError,
    StatsAnswer,
    TargetSMSClient,
)
from app.reconcile_compare import Times, context_row, group, incoming, our_status, verdict
from app.reconcile_store import claim_day, finish, held, renew, store_states, upsert_context

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MINUTE = timedelta(minutes=1)
# Errors that another window size cannot cure.
FATAL = (AuthenticationFailed, AccountBlocked, BadDate, NoPostData)


def utc_now() -> datetime:
    return datetime.now(UTC)


class WindowFailed(Exception):
    """A one-minute window the provider would not answer."""


# --- Windows --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Sends from minute `start` through minute `stop`, provider wall clock."""

    start: datetime
    stop: datetime

    @property
    def minutes(self) -> int:
        return (self.stop - self.start) // MINUTE + 1

    def halves(self) -> tuple[Window, Window]:
        middle = self.start + (self.minutes // 2) * MINUTE
        return Window(self.start, middle - MINUTE), Window(middle, self.stop)

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}..{self.stop:%H:%M}"


def day_windows(day: date, minutes: int) -> list[Window]:
    start = datetime(day.year, day.month, day.day)
    last = start + timedelta(days=1) - MINUTE
    size = timedelta(minutes=minutes)
    windows = []
    while start <= last:
        windows.append(Window(start, min(start + size - MINUTE, last)))
        start += size
    return windows


async def answers(
    client: TargetSMSClient, windows: Sequence[Window]
) -> AsyncIterator[tuple[Window, StatsAnswer]]:
    """Each window's answer, in order, splitting the ones that fail or come back short."""
    todo = list(reversed(windows))
    while todo:
        window = todo.pop()
        try:
            answer = await client.stats(window.start, window.stop)
        except FATAL:
            raise
        except ProviderError as exc:
            problem = str(exc)
        else:
            if not answer.truncated:
                yield window, answer
                continue
            problem = f"answer cut short ({len(answer.rows)} of {answer.announced} rows)"
        if window.minutes == 1:
            raise WindowFailed(f"stats.php {window}: {problem}")
        log.info("stats.php %s: %s; asking in halves", window, problem)
        todo.extend(reversed(window.halves()))


# --- Applying a window ---------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    windows: int = 0
    parts: int = 0
    messages: int = 0
    provider_counts: Counter[str] = field(default_factory=Counter)
    our_counts: Counter[str] = field(default_factory=Counter)
    added: int = 0
    updated: int = 0
    flagged: int = 0

    def values(self) -> Row:
        return {
            "windows": self.windows,
            "parts": self.parts,
            "messages": self.messages,
            "provider_counts": dict(sorted(self.provider_counts.items())),
            "our_counts": dict(sorted(self.our_counts.items())),
            "added": self.added,
            "updated": self.updated,
            "flagged": self.flagged,
        }


def apply_window(
    engine: Engine,
    settings: Settings,
    report_id: int,
    answer: StatsAnswer,
    tally: Tally,
    now: datetime,
) -> None:
    """Compare one window's messages with ours and store the differences, in one transaction."""
    messages, times = group(answer.rows), Times(settings)
    with write_transaction(engine) as conn:
        ours = held(conn, [message.id_sms for message in messages])
        verdicts = {m.id_sms: verdict(ours.get(m.id_sms), m) for m in messages}
        states = [incoming(m, times) for m in messages if verdicts[m.id_sms] is not None]
        store_states(conn, states, now)
        upsert_context(conn, [context_row(m, settings, times, now) for m in messages])
        renew(conn, report_id, now)
    counted = Counter(verdicts.values())
    tally.windows += 1
    tally.parts += len(answer.rows)
    tally.messages += len(messages)
    tally.provider_counts.update(message.status for message in messages)
    tally.our_counts.update(our_status(ours.get(message.id_sms)) for message in messages)
    tally.added += counted["added"]
    tally.updated += counted["updated"]
    tally.flagged += counted["flagged"]


# --- Running --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayResult:
    day: date
    report_id: int | None  # None: skipped, another reconciler held the day
    tally: Tally
    error: str | None = None

    @property
    def skipped(self) -> bool:
        return self.report_id is None and self.error is None


def default_days(settings: Settings, now: datetime) -> list[date]:
    """Yesterday and today in the account's zone."""
    today = now.astimezone(settings.zone).date()
    return [today - timedelta(days=1), today]


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: TargetSMSClient,
        *,
        clock: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        self.settings, self.engine, self.client, self.clock = settings, engine, client, clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"[:64]

    async def run(self, days: Sequence[date]) -> list[DayResult]:
        """Each day in turn; refused credentials (or a blocked account) end the run, raised."""
        return [await self.day(day) for day in days]

    async def day(self, day: date) -> DayResult:
        tally = Tally()
        try:
            report_id = await asyncio.to_thread(
                claim_day, self.engine, day, self.owner, self.clock()
            )
        except SQLAlchemyError as exc:
            # No report row can say it: the database is what failed.
            log.warning("reconcile %s: database: %s", day, type(exc).__name__)
            return DayResult(day, None, tally, f"database: {type(exc).__name__}")
        if report_id is None:
            log.info("reconcile %s: another reconciler is on this day; skipped", day)
            return DayResult(day, None, tally)
        error: str | None = None
        try:
            await self._windows(day, report_id, tally)
        except (AuthenticationFailed, AccountBlocked) as exc:
            await self._finish(report_id, tally, f"stats.php refused our credentials: {exc.text}")
            raise
        except (ProviderError, WindowFailed) as exc:
            error = str(exc)
        except SQLAlchemyError as exc:
            error = f"database: {type(exc).__name__}"
        error = await self._finish(report_id, tally, error)
        _log_day(day, tally, error)
        return DayResult(day, report_id, tally, error)

    async def _windows(self, day: date, report_id: int, tally: Tally) -> None:
        windows = day_windows(day, self.settings.reconcile_window_minutes)
        async for _window, answer in answers(self.client, windows):
            await asyncio.to_thread(
                apply_window, self.engine, self.settings, report_id, answer, tally, self.clock()
            )

    async def _finish(self, report_id: int, tally: Tally, error: str | None) -> str | None:
        """Close the report; the error to tell (the database's, if closing failed)."""
        try:
            await asyncio.to_thread(
                finish, self.engine, report_id, tally.values(), error, self.clock()
            )
        except SQLAlchemyError as exc:
            # The row stays "running" until its lease runs out; the next run closes it.
            return f"database: {type(exc).__name__} (report not closed)"
        return error


def _log_day(day: date, tally: Tally, error: str | None) -> None:
    level = logging.WARNING if error or tally.flagged else logging.INFO
    log.log(
        level,
        "reconcile %s: %d windows, %d parts, %d messages; %d added, %d updated, %d flagged%s",
        day,
        tally.windows,
        tally.parts,
        tally.messages,
        tally.added,
        tally.updated,
        tally.flagged,
        f"; failed: {error}" if error else "",
    )


# --- Scheduled, in the poller role ----------------------------------------------------


class Role(Protocol):
    """What the poller role lends the schedule."""

    settings: Settings
    engine: Engine
    client: TargetSMSClient
    clock: Clock


def start_schedule(role: Role, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Reconcile yesterday and today every RECONCILE_INTERVAL_MINUTES until `stop` (0: never)."""
    if role.settings.reconcile_interval_minutes == 0:
        return None
    reconciler = Reconciler(role.settings, role.engine, role.client, clock=role.clock)
    return asyncio.create_task(_scheduled(reconciler, stop), name="reconcile")


async def _scheduled(reconciler: Reconciler, stop: asyncio.Event) -> None:
    interval = reconciler.settings.reconcile_interval_minutes * 60
    while not stop.is_set():
        try:
            await reconciler.run(default_days(reconciler.settings, reconciler.clock()))
        except ProviderError as exc:
            log.error("reconciliation stopped: %s", exc)
        except Exception:  # the poller must go on, whatever this hits
            log.exception("reconciliation failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
