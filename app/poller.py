"""The poller: asks state.php for the statuses that callbacks did not bring.

A pass walks the pending messages (not final, not given up) in id order, in
batches of POLL_BATCH_SIZE. For each batch it

1. claims it: in one write transaction it selects the next messages that are
   due (no new state and no poll for POLL_AFTER_SECONDS) and sets their
   `last_polled_at` to now;
2. asks state.php about those ids, holding no lock;
3. stores the answers through `store.store_states`, the path callbacks take
   (source "poll"), in one transaction: a batch is stored whole or not at all.

**Several pollers.** The claim runs under `db.write_transaction`, the
database-wide write lock (an advisory lock on PostgreSQL, `BEGIN IMMEDIATE`
on SQLite), so claims are serialised: a poller's claim commits its
`last_polled_at` before the next claim, by any poller, can read. A claimed
message is not due again for POLL_AFTER_SECONDS, so two pollers never ask for
the same id in one pass, and within a pass a poller only moves forward.
Claimed ids whose poll failed (provider down, process killed) are simply due
again after POLL_AFTER_SECONDS. On SQLite one poller is the supported set-up
(the database is one file on one machine).

**Giving up.** The first claim of a pass also marks every pending message
first seen more than POLL_MAX_AGE_HOURS ago as given up (`given_up_at`): it is
not polled any more, and the read API shows it as `given_up`.

**Errors.** A provider error ends the pass (the client has already retried
network errors and 5xx); the next pass waits a backoff that doubles with each
failed pass, capped, with jitter. Refused credentials (or a blocked account)
raise CredentialsRefused: polling stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Table, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.config import Settings
from app.db import write_transaction
from app.models import Message
from app.protocol import IncomingState, build_state
from app.provider import (
    AccountBlocked,
    AuthenticationFailed,
    PolledState,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    TargetSMSClient,
)
from app.reconcile import start_schedule
from app.store import one_of, store_states

log = logging.getLogger(__name__)

MESSAGES = cast(Table, Message.__table__)
Clock = Callable[[], datetime]
MAX_BACKOFF_SECONDS = 600.0


class CredentialsRefused(Exception):
    """The provider refused our login or password, or the account is blocked."""


@dataclass(slots=True)
class PassResult:
    claimed: int = 0  # ids asked about
    answered: int = 0  # states the provider returned
    stored: int = 0  # of which new
    given_up: int = 0
    error: str | None = None  # the provider error that ended the pass early


class PassHooks(Protocol):
    """Work around each pass of `run` (app/selfheal.py); must not raise."""

    async def before_pass(self) -> int | None:
        """POLL_AFTER_SECONDS for the coming pass; None: the setting."""

    async def after_pass(self, result: PassResult) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def backoff_seconds(failures: int, interval: float) -> float:
    """The wait after `failures` failed passes in a row: doubling, capped, jittered."""
    ceiling = min(max(interval, MAX_BACKOFF_SECONDS), interval * (1 << min(failures - 1, 20)))
    return max(1.0, ceiling * random.uniform(0.5, 1.0))


class Poller:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: TargetSMSClient,
        *,
        clock: Clock = utc_now,
        stop: asyncio.Event | None = None,
        hooks: PassHooks | None = None,
    ) -> None:
        self.settings, self.engine, self.client = settings, engine, client
        self.clock = clock
        self.stop = stop if stop is not None else asyncio.Event()
        self.hooks = hooks
        # The settings of the pass in hand (self-healing may shorten POLL_AFTER_SECONDS).
        self.pass_settings = settings

    async def run(self, *, once: bool = False) -> PassResult:
        """Passes until `stop` is set (or one, with `once`); the last pass's result."""
        await self.check_credentials()
        # Reconciliation against stats.php runs beside the passes until `stop` (issue 12).
        self.reconciling = None if once else start_schedule(self, self.stop)
        failures = 0
        while True:
            await self._before_pass()
            try:
                result = await self.run_pass()
            except SQLAlchemyError as exc:
                # The batch in hand is rolled back; its ids are due again later.
                log.warning("poll pass failed on the database: %s", type(exc).__name__)
                result = PassResult(error=f"database: {type(exc).__name__}")
            if self.hooks is not None:
                await self.hooks.after_pass(result)
            if once or self.stop.is_set():
                return result
            failures = failures + 1 if result.error else 0
            interval = self.settings.poll_interval_seconds
            delay = backoff_seconds(failures, interval) if failures else interval
            if result.error:
                log.info("next poll pass in %.0f s (failed passes in a row: %d)", delay, failures)
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
                return result
            except TimeoutError:
                pass

    async def _before_pass(self) -> None:
        poll_after = await self.hooks.before_pass() if self.hooks is not None else None
        self.pass_settings = (
            self.settings
            if poll_after is None
            else self.settings.model_copy(update={"poll_after_seconds": poll_after})
        )

    async def check_credentials(self) -> None:
        """Fail fast on refused credentials, even when nothing is due; a cheap read-only call."""
        try:
            url = await self.client.get_callback_url()
        except (AuthenticationFailed, AccountBlocked) as exc:
            metrics.PROVIDER_ERRORS.labels("error_document").inc()
            raise CredentialsRefused(exc.text) from None
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(_error_kind(exc)).inc()
            log.warning("get_state.php failed: %s; polling anyway", exc)
            return
        # Never the URL itself: it holds the callback token.
        if not url:
            log.warning("the provider has no callback URL: only polling will bring statuses")

    async def run_pass(self) -> PassResult:
        """One pass over the due messages; CredentialsRefused stops everything."""
        started, result, after = time.monotonic(), PassResult(), 0
        while not self.stop.is_set():
            claimed, given_up = await asyncio.to_thread(self._claim, after, result.claimed == 0)
            result.given_up += given_up
            if not claimed:
                break
            after = claimed[-1][0]
            ids = [id_sms for _, id_sms in claimed]
            result.claimed += len(ids)
            polled = await self._fetch(ids, result)
            if polled is None:
                break
            result.answered += len(polled)
            result.stored += await asyncio.to_thread(self._store, ids, polled)
        metrics.POLL_PASSES.inc()
        log.info(
            "poll pass: %d ids asked, %d states answered, %d new, %d given up, %.1f s%s",
            result.claimed,
            result.answered,
            result.stored,
            result.given_up,
            time.monotonic() - started,
            f"; ended early: {result.error}" if result.error else "",
        )
        return result

    async def _fetch(self, ids: list[str], result: PassResult) -> list[PolledState] | None:
        """The provider's answer, or None when it failed or `stop` came first."""
        fetch = asyncio.ensure_future(self.client.fetch_states(ids))
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not fetch.done():
            # Stopping: drop this batch unstored; its ids are due again later.
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            return None
        try:
            return fetch.result()
        except (AuthenticationFailed, AccountBlocked) as exc:
            metrics.PROVIDER_ERRORS.labels("error_document").inc()
            raise CredentialsRefused(exc.text) from None
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(_error_kind(exc)).inc()
            log.warning("state.php failed: %s; these %d ids are polled again later", exc, len(ids))
            result.error = str(exc)
            return None

    def _claim(self, after: int, first: bool) -> tuple[list[tuple[int, str]], int]:
        now = self.clock()
        with write_transaction(self.engine) as conn:
            given_up = self._give_up(conn, now) if first else 0
            return _claim_due(conn, self.pass_settings, after, now), given_up

    def _give_up(self, conn: Connection, now: datetime) -> int:
        oldest = now - timedelta(hours=self.settings.poll_max_age_hours)
        statement = (
            update(MESSAGES)
            .where(
                MESSAGES.c.final.is_(False),
                MESSAGES.c.given_up_at.is_(None),
                MESSAGES.c.first_seen_at < oldest,
            )
            .values(given_up_at=now, last_given_up_at=now)
        )
        return conn.execute(statement).rowcount

    def _store(self, ids: Sequence[str], polled: Sequence[PolledState]) -> int:
        asked, zone = set(ids), self.settings.zone
        states = [
            state
            for state in (incoming_state(p, zone) for p in polled if p.id_sms in asked)
            if state is not None
        ]
        if not states:
            return 0
        return store_states(self.engine, states, "poll", self.clock()).stored


def _claim_due(
    conn: Connection, settings: Settings, after: int, now: datetime
) -> list[tuple[int, str]]:
    """The next due messages after id `after`, marked as polled now."""
    cutoff = now - timedelta(seconds=settings.poll_after_seconds)
    query = (
        select(Message.id, Message.id_sms)
        .where(
            Message.final.is_(False),
            Message.given_up_at.is_(None),
            Message.id > after,
            Message.updated_at < cutoff,
            or_(Message.last_polled_at.is_(None), Message.last_polled_at < cutoff),
        )
        .order_by(Message.id)
        .limit(settings.poll_batch_size)
    )
    claimed = [(row.id, row.id_sms) for row in conn.execute(query)]
    if claimed:
        keys = [key for key, _ in claimed]
        conn.execute(
            update(MESSAGES).where(one_of(MESSAGES.c.id, keys, conn)).values(last_polled_at=now)
        )
    return claimed


def incoming_state(polled: PolledState, zone: ZoneInfo) -> IncomingState | None:
    """A polled state as the store takes it (the rules callbacks follow)."""
    return build_state(
        polled.id_sms,
        polled.status,
        polled.time_raw,
        zone,
        num_parts=polled.num_parts,
        price=polled.price,
    )


def _error_kind(exc: ProviderError) -> str:
    if isinstance(exc, ProviderUnavailable):
        return "network"
    if isinstance(exc, ProviderRejected):
        return "error_document"
    return "protocol"
