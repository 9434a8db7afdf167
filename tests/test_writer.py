"""The group-commit writer on a real engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_db_engine, write_transaction
from app.ingest import Outcome, Submission
from app.protocol import IncomingState
from app.writer import StorageUnavailable, Writer
from tests.conftest import rows

REFUSED_ID = "666"


@pytest.fixture
def refusing(engine: Engine) -> Iterator[Engine]:
    """The database refuses (a constraint of its own) any event for REFUSED_ID."""
    refuse_events_of(engine, REFUSED_ID)
    yield engine
    with engine.begin() as conn:  # the PostgreSQL database outlives the test
        conn.execute(text("DROP TRIGGER refuse" + (" ON events" if _pg(engine) else "")))


def _pg(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def refuse_events_of(engine: Engine, id_sms: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON events "
                    f"WHEN NEW.id_sms = '{id_sms}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
            return
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW "
                f"WHEN (NEW.id_sms = '{id_sms}') EXECUTE FUNCTION refuse()"
            )
        )


def submission(id_sms: str, body: bytes) -> Submission:
    state = IncomingState(id_sms=id_sms, status="deliver", time_raw="", status_at=None)
    return Submission([state], "callback", datetime.now(UTC), body, "127.0.0.1")


def commits() -> float:
    return REGISTRY.get_sample_value("targetsms_db_commit_seconds_count") or 0.0


async def submit_together(engine: Engine, *batch: Submission) -> list[Outcome | BaseException]:
    writer = Writer(engine, max_batch_states=1000, timeout=30)
    writer.start()
    try:
        # Both are queued before the writer task first runs: one group commit.
        return await asyncio.gather(*(writer.submit(s) for s in batch), return_exceptions=True)
    finally:
        await writer.stop()


def test_one_bad_submission_does_not_fail_the_good_one_in_its_group_commit(
    refusing: Engine,
) -> None:
    engine = refusing
    before = commits()
    good, bad = submission("665", b"good"), submission(REFUSED_ID, b"bad")
    results = asyncio.run(submit_together(engine, good, bad))
    # One group commit refused, then each submission on its own.
    assert commits() - before == 3
    assert isinstance(results[0], Outcome) and results[0].acked_ids == ["665"]
    assert isinstance(results[1], StorageUnavailable)
    assert rows(engine, "SELECT id_sms, status FROM events") == [("665", "deliver")]
    assert rows(engine, "SELECT body FROM documents") in ([(b"good",)], [(memoryview(b"good"),)])


@pytest.mark.parametrize("order", ["bad-first", "bad-last"])
def test_the_split_keeps_every_good_submission_whatever_the_order(
    refusing: Engine, order: str
) -> None:
    engine = refusing
    goods = [submission(str(100 + n), b"good") for n in range(3)]
    bad = submission(REFUSED_ID, b"bad")
    batch = [bad, *goods] if order == "bad-first" else [*goods, bad]
    results = asyncio.run(submit_together(engine, *batch))
    acked = [r.acked_ids[0] for r in results if isinstance(r, Outcome)]
    assert sorted(acked) == ["100", "101", "102"]
    assert sum(isinstance(r, StorageUnavailable) for r in results) == 1
    assert sorted(r[0] for r in rows(engine, "SELECT id_sms FROM events")) == acked


def test_a_commit_that_does_not_come_in_time_is_answered_503_and_may_still_land(
    engine: Engine, settings: Settings
) -> None:
    """Another writer holds the database's write lock past the timeout: the
    request is answered StorageUnavailable (503) about then, not when the lock
    goes; its batch, already taken, commits once the lock is released."""
    other = create_db_engine(settings)

    async def scenario() -> float:
        writer = Writer(engine, max_batch_states=1000, timeout=0.3)
        writer.start()
        try:
            with write_transaction(other):
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="did not commit in time"):
                    # wait_for: a writer that never answers fails here, not hangs
                    await asyncio.wait_for(writer.submit(submission("770", b"late")), 5)
                waited = time.monotonic() - started
        finally:
            await writer.stop()  # waits for the batch's commit, now unblocked
        return waited

    try:
        waited = asyncio.run(scenario())
    finally:
        other.dispose()
    assert 0.3 <= waited < 2.0
    assert rows(engine, "SELECT id_sms, status FROM events") == [("770", "deliver")]
