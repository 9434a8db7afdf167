"""The delivery loop: finds subscriptions with something to send, and sends it.

It runs in the service (started by the lifespan unless WEBHOOK_DELIVERY=false)
and in `targetsms-receiver deliver`. It wakes when this process's writer
commits (so a change goes out within milliseconds of its acknowledgement),
and every WEBHOOK_POLL_INTERVAL_SECONDS for commits made by other processes
and for retries that fell due. Each subscription it holds the lease of gets a
task of its own that sends batch after batch, in order, and waits for news
when there is nothing left, keeping the lease; it ends when a POST fails (the
retry is scheduled and the lease given up) or the lease is lost. Several
processes may run this loop on one database: the lease (app/webhooks/outbox.py)
lets one at a time deliver a subscription.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import feed
from app.config import Settings
from app.webhooks import outbox
from app.webhooks.sender import Result, Sender, ssl_context
from app.webhooks.targets import Resolver, system_resolver

log = logging.getLogger(__name__)

EVENT_TYPE = "message.status"
PURGE_EVERY_SECONDS = 3600.0
STOP_GRACE_TIMEOUTS = 2  # on stop, in-flight POSTs get this many timeouts to finish


def payload(batch: outbox.Batch, now: datetime) -> bytes:
    """The body of a delivery (JSON, the exact bytes signed)."""
    body: dict[str, Any] = {
        "type": EVENT_TYPE,
        "timestamp": now,
        "data": {"changes": batch.changes, "cursor": feed.cursor(batch.last)},
    }
    return pydantic_core.to_json(body)


async def _read(reading: asyncio.Future[outbox.Ahead] | None) -> outbox.Ahead | None:
    """The changes read ahead; None when none were read or the read failed (the
    next batch is then read the usual way, which reports the fault)."""
    if reading is None:
        return None
    try:
        return await reading
    except SQLAlchemyError:
        return None


def new_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        wake: Callable[[], asyncio.Event] | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings, self.engine, self.resolver = settings, engine, resolver
        self.wake = wake
        # httpx logs every request line at INFO, URL included, and a subscriber's
        # URL may carry its own token: keep only its warnings.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self.owner = new_owner()
        self.stopping = asyncio.Event()
        self._kick = asyncio.Event()
        self._claim_idle = False  # the next scan also takes subscriptions with nothing to send
        self._news = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Kept between batches (keep-alive), one per subscription and URL.
        self._senders: dict[int, tuple[str, Sender]] = {}
        self._ssl = ssl_context()
        self._purged_at = float("-inf")

    async def run(self) -> None:
        """Deliver until `stop()`."""
        log.info("webhook delivery started")
        loop = asyncio.get_running_loop()
        next_scan = loop.time()
        while not self.stopping.is_set():
            committed = self.wake() if self.wake is not None else None  # before reading
            if loop.time() >= next_scan or self._kick.is_set():
                self._kick.clear()
                next_scan = loop.time() + self.settings.webhook_poll_interval_seconds
                await self._scan()
            await feed.first_set([self.stopping, self._kick, committed], next_scan - loop.time())
            self._announce()

    async def _scan(self) -> None:
        try:
            await self._start_due()
            await self._purge_when_due()
        except SQLAlchemyError as exc:  # the database may be down: try again later
            log.warning("webhook delivery: the database failed: %s", type(exc).__name__)

    def kick(self) -> None:
        """A subscription was created, changed or rewound through this process's
        API: scan now, not at the next poll, and take it even with nothing to
        send yet, so that the next commit here reaches it at once. (Other
        processes find out within WEBHOOK_POLL_INTERVAL_SECONDS.)"""
        self._claim_idle = True
        self._kick.set()

    def _announce(self) -> None:
        """Wake the subscription tasks: there may be new changes."""
        self._news.set()
        self._news = asyncio.Event()

    async def stop(self) -> None:
        """Let in-flight POSTs finish (within two timeouts), then give the leases up."""
        self.stopping.set()
        self._announce()
        tasks = list(self._tasks.values())
        if tasks:
            grace = STOP_GRACE_TIMEOUTS * self.settings.webhook_timeout_seconds
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for _, sender in self._senders.values():
            await sender.close()
        self._senders.clear()

    async def _start_due(self) -> None:
        idle, self._claim_idle = self._claim_idle, False
        due = await asyncio.to_thread(outbox.due, self.engine, datetime.now(UTC), idle=idle)
        for subscription_id in due:
            if subscription_id in self._tasks or self.stopping.is_set():
                continue
            taken = await asyncio.to_thread(
                outbox.take_lease, self.engine, subscription_id, self.owner, self.settings
            )
            if taken:
                task = asyncio.create_task(self._deliver(subscription_id))
                self._tasks[subscription_id] = task
                task.add_done_callback(functools.partial(self._finished, subscription_id))

    def _finished(self, subscription_id: int, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(subscription_id, None)
        self._kick.set()

    async def _deliver(self, subscription_id: int) -> None:
        """Send batch after batch while holding the lease; between them, wait for news.

        The lease is kept while idle (renewed by `next_batch`), so a commit in this
        process reaches the receiver without a lease round trip; it is given up on a
        failed POST (the retry may be taken by any process) and on stop.

        While a batch is sent, the changes after it are read, up to
        READ_AHEAD_CHANGES (`outbox.read_ahead`): recording each delivery then
        yields the next batch from them without reading the subscription or the
        feed again. Sending, recording and reading one after the other, a backlog
        went out at 23-27% of the rate at which one client reads the feed
        (bench/RESULTS.md, "Webhooks"). Each batch still waits for the previous
        one's 2xx and recorded cursor."""
        engine, owner, settings = self.engine, self.owner, self.settings
        try:
            batch: outbox.Batch | None = None
            ahead: outbox.Ahead | None = None
            while not self.stopping.is_set():
                news = self._news  # before reading: a commit meanwhile sets it
                if batch is None:
                    batch = await asyncio.to_thread(
                        outbox.next_batch, engine, subscription_id, owner, settings
                    )
                if batch is None:
                    await feed.first_set([news], settings.webhook_poll_interval_seconds)
                    continue
                reading = None
                if ahead is None and not batch.reached_head:
                    reading = asyncio.ensure_future(
                        asyncio.to_thread(outbox.read_ahead, engine, batch, settings)
                    )
                result = await self._send(subscription_id, batch)
                if reading is not None:
                    ahead = await _read(reading)
                more = not batch.reached_head or news.is_set()
                delivered, batch, ahead = await asyncio.to_thread(
                    self._record, batch, result, more, ahead
                )
                if not delivered:
                    return
        except outbox.LeaseLost:
            return
        except SQLAlchemyError as exc:
            log.warning("webhook %d: the database failed: %s", subscription_id, type(exc).__name__)
        finally:
            await self._release(subscription_id)
            kept = self._senders.pop(subscription_id, None)
            if kept is not None:
                await kept[1].close()

    async def _send(self, subscription_id: int, batch: outbox.Batch) -> Result:
        sender = await self._sender(subscription_id, batch.url)
        body = payload(batch, datetime.now(UTC))
        return await sender.send(batch.url, batch.webhook_id, batch.secrets, body)

    def _record(
        self, batch: outbox.Batch, result: Result, more: bool, ahead: outbox.Ahead | None
    ) -> tuple[bool, outbox.Batch | None, outbox.Ahead | None]:
        """(delivered, the next batch when delivered and there may be more, what
        is left read ahead); in a thread."""
        owner, settings = self.owner, self.settings
        delivered, sub = outbox.record(self.engine, batch, result, owner, settings)
        if not delivered:
            return False, None, None
        if not more:
            return True, None, None
        following, ahead = outbox.batch_after(sub, ahead, settings)
        if following is not None:
            return True, following, ahead
        next_batch = outbox.next_batch(self.engine, batch.subscription_id, owner, settings)
        return True, next_batch, None

    async def _sender(self, subscription_id: int, url: str) -> Sender:
        kept = self._senders.get(subscription_id)
        if kept is not None and kept[0] == url:
            return kept[1]
        if kept is not None:
            await kept[1].close()
        sender = Sender(self.settings, self.resolver, self._ssl)
        self._senders[subscription_id] = (url, sender)
        return sender

    async def _release(self, subscription_id: int) -> None:
        try:
            await asyncio.to_thread(outbox.release_lease, self.engine, subscription_id, self.owner)
        except SQLAlchemyError as exc:  # it expires on its own
            log.warning(
                "webhook %d: releasing the lease failed: %s", subscription_id, type(exc).__name__
            )

    async def _purge_when_due(self) -> None:
        if time.monotonic() - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = time.monotonic()
        days = self.settings.webhook_attempt_retention_days
        deleted = await asyncio.to_thread(outbox.purge_attempts, self.engine, days)
        if deleted:
            log.info("purged %d webhook attempts older than %d days", deleted, days)
