"""Group commit: the states of concurrent requests share one transaction.

A commit costs far more than the rows in it (an fsync, round trips), so one
transaction per request caps the service at a few thousand requests a second:
the database floor, which commits each document alone, stored 1,600 a second
on PostgreSQL and 4,900 on SQLite (bench/RESULTS.md). Instead each request
hands its states to the process's single writer and waits; the writer takes
everything that queued up while the previous transaction ran, stores it in
one transaction, and only after the commit answers each waiting request. It
awaits each commit from the event loop, which serves other requests
meanwhile: PostgreSQL's through `store.AsyncPostgresCommit`, SQLite's in a
child process (`sqlite_commit.SqliteCommitProcess`), both by `store`'s one
path. A request is therefore never acknowledged before the commit that holds
its states, and when a commit fails every request in it gets
`StorageUnavailable` (503, no id acknowledged).

A request that waits longer than `timeout` is answered 503 too (its states may
still be committed later: the provider's retry is then a duplicate). One
watchdog task enforces that for every waiting request: a timer per request
(`asyncio.wait_for`) was 7% of a 1-state callback's time on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime

from sqlalchemy import Engine

from app import store
from app.ingest import Outcome, Submission
from app.metrics import COMMIT_SECONDS
from app.sqlite_commit import SqliteCommitProcess

log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """The states could not be committed; nothing may be acknowledged."""


class Writer:
    def __init__(self, engine: Engine, *, max_batch_states: int, timeout: float) -> None:
        self._max_batch_states = max_batch_states
        self._timeout = timeout
        self._pending: list[tuple[Submission, asyncio.Future[Outcome]]] = []
        # Every waiting request's deadline, in the order they came (so in
        # deadline order): the watchdog only ever looks at the front.
        self._deadlines: deque[tuple[float, asyncio.Future[Outcome]]] = deque()
        self._wakeup = asyncio.Event()
        self._store: store.AsyncPostgresCommit | SqliteCommitProcess = (
            store.AsyncPostgresCommit(engine)
            if engine.dialect.name == "postgresql"
            else SqliteCommitProcess(engine)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._committing = False
        self._committed = asyncio.Event()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="writer"),
            asyncio.create_task(self._expire(), name="writer-watchdog"),
        ]

    async def stop(self) -> None:
        """Finish what is queued and the commit under way, then stop."""
        while self._pending or self._committing:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._store.close()

    def commit_signal(self) -> asyncio.Event:
        """An event set by this process's next successful commit (the change
        feed's long poll waits on it). Take it before reading, then wait on it:
        a commit in between has already set it."""
        return self._committed

    def _signal_commit(self) -> None:
        self._committed.set()
        self._committed = asyncio.Event()

    async def submit(self, submission: Submission) -> Outcome:
        """The outcome once the states are committed; `StorageUnavailable` when
        the commit failed or did not come within the timeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((submission, future))
        self._deadlines.append((loop.time() + self._timeout, future))
        self._wakeup.set()
        # Cancelled with its request (the client went away), the future is
        # done: the batch it is in is still committed, its answer dropped.
        return await future

    async def _expire(self) -> None:
        """Answer `StorageUnavailable` to every request past its deadline, at
        most a tick late (a tenth of the timeout, between 50 ms and 1 s)."""
        tick = min(1.0, max(0.05, self._timeout / 10))
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
                _, future = deadlines.popleft()
                late = StorageUnavailable("the database did not commit in time")
                _resolve(future, exception=late)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._committing = True
            try:
                await self._flush(self._take_batch())
            finally:
                self._committing = False

    def _take_batch(self) -> list[tuple[Submission, asyncio.Future[Outcome]]]:
        count = states = 0
        for submission, _ in self._pending:
            if count and states + len(submission.states) > self._max_batch_states:
                break
            count += 1
            states += len(submission.states)
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _flush(self, batch: list[tuple[Submission, asyncio.Future[Outcome]]]) -> None:
        submissions = [submission for submission, _ in batch]
        try:
            outcomes = await self._commit(submissions)
        except Exception as exc:
            # One submission's data, not the database: retry them one by one
            # so that one bad document cannot fail the rest.
            if len(batch) > 1 and isinstance(exc, store.DataRefused):
                for single in batch:
                    await self._flush([single])
                return
            log.error(
                "commit failed, %d requests answered 503: %s", len(batch), store.first_line(exc)
            )
            for _, future in batch:
                _resolve(future, exception=StorageUnavailable("the commit failed"))
            return
        self._signal_commit()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            _resolve(future, result=outcome)

    async def _commit(self, submissions: list[Submission]) -> list[Outcome]:
        with COMMIT_SECONDS.time():
            return await self._store.commit(submissions, datetime.now(UTC))


def _resolve(
    future: asyncio.Future[Outcome],
    *,
    result: Outcome | None = None,
    exception: Exception | None = None,
) -> None:
    if future.done():  # its request was cancelled (client gone)
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        assert result is not None
        future.set_result(result)
