"""The outbox's batches, read the usual way and read ahead, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, event

from app import feed
from app.config import Settings
from app.db import write_transaction
from app.webhooks import outbox, subscriptions
from app.webhooks.sender import Result
from tests.api_helpers import store

OWNER = "test-owner"
DELIVERED = Result("delivered", 204)


def backlog(engine: Engine, settings: Settings, count: int) -> None:
    """`count` changes, every third one `send` and the rest `deliver`."""
    states = [
        (str(10_000 + n), "send" if n % 3 == 0 else "deliver", "2026-11-25 10:00:00")
        for n in range(count)
    ]
    for start in range(0, count, 500):
        store(engine, settings, states[start : start + 500])


def leased_from_the_start(engine: Engine, settings: Settings, **filters: Any) -> int:
    created = subscriptions.create(engine, "http://127.0.0.1:9/hook", **filters)
    subscription_id: int = created.view["id"]
    subscriptions.replay(engine, subscription_id, after=0, since=None)
    assert outbox.take_lease(engine, subscription_id, OWNER, settings)
    return subscription_id


@pytest.mark.parametrize("filters", [{}, {"statuses": ["deliver"]}], ids=["all", "filtered"])
def test_batches_read_ahead_are_those_next_batch_reads(
    engine: Engine, settings: Settings, filters: dict[str, Any]
) -> None:
    """Delivering a backlog as the deliverer does (each batch from what was read
    while the previous one was sent, else read anew), every batch is the one
    `next_batch` gives at that point: same range, changes, id and secrets. The
    backlog is larger than one read ahead, so both ways take turns."""
    settings = settings.model_copy(update={"webhook_batch_size": 100})
    backlog(engine, settings, 2 * outbox.READ_AHEAD_CHANGES + 250)
    subscription_id = leased_from_the_start(engine, settings, **filters)
    batch = outbox.next_batch(engine, subscription_id, OWNER, settings)
    ahead: outbox.Ahead | None = None
    sent, from_ahead = [], 0
    while batch is not None:
        if ahead is None and not batch.reached_head:
            ahead = outbox.read_ahead(engine, batch, settings)
        sent.append(batch)
        delivered, sub = outbox.record(engine, batch, DELIVERED, OWNER, settings)
        assert delivered and sub is not None
        expected = outbox.next_batch(engine, subscription_id, OWNER, settings)
        following, ahead = outbox.batch_after(sub, ahead, settings)
        if following is not None:
            from_ahead += 1
            assert following == expected
        batch = expected
    statuses = set(filters.get("statuses", ["send", "deliver"]))
    wanted = [c for c in _changes(engine) if c["status"] in statuses]
    assert [c for b in sent for c in b.changes] == wanted
    assert all(len(b.changes) == 100 for b in sent[:-1])
    assert sent[-1].reached_head
    assert from_ahead >= len(sent) - 4  # read anew only after each read ahead ran out


def test_nothing_is_taken_from_ahead_once_the_subscription_changed(
    engine: Engine, settings: Settings
) -> None:
    """A filter change or a replay while a batch is sent makes a new epoch: what
    was read ahead under the old one is dropped, and the next batch follows the
    new state. A pause drops it too."""
    settings = settings.model_copy(update={"webhook_batch_size": 100})
    backlog(engine, settings, 500)
    subscription_id = leased_from_the_start(engine, settings)
    batch = outbox.next_batch(engine, subscription_id, OWNER, settings)
    assert batch is not None
    ahead = outbox.read_ahead(engine, batch, settings)
    subscriptions.change(engine, subscription_id, {"statuses": ["send"]})
    delivered, sub = outbox.record(engine, batch, DELIVERED, OWNER, settings)
    assert delivered
    assert outbox.batch_after(sub, ahead, settings) == (None, None)
    following = outbox.next_batch(engine, subscription_id, OWNER, settings)
    assert following is not None
    assert following.after == batch.after  # the delivery did not move the new epoch's cursor
    assert {c["status"] for c in following.changes} == {"send"}

    ahead = outbox.read_ahead(engine, following, settings)
    subscriptions.replay(engine, subscription_id, after=0, since=None)
    _, sub = outbox.record(engine, following, DELIVERED, OWNER, settings)
    assert outbox.batch_after(sub, ahead, settings) == (None, None)

    # Paused: the lease and the epoch stay, but nothing more is sent.
    again = outbox.next_batch(engine, subscription_id, OWNER, settings)
    assert again is not None
    ahead = outbox.read_ahead(engine, again, settings)
    assert ahead.rows
    subscriptions.change(engine, subscription_id, {"enabled": False})
    _, sub = outbox.record(engine, again, DELIVERED, OWNER, settings)
    assert sub is not None and not sub.enabled
    assert outbox.batch_after(sub, ahead, settings) == (None, None)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_batch_reads_its_own_changes_not_the_whole_backlog(
    engine: Engine, settings: Settings
) -> None:
    """On a table never analyzed PostgreSQL read a batch bounded by the feed's
    head as a bitmap scan of everything up to the head, then a sort: every
    batch of a backlog cost as much as the whole backlog. Each read of changes
    must touch about as many events as it returns."""
    settings = settings.model_copy(update={"webhook_batch_size": 100})
    with write_transaction(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO events (id_sms, status, time_raw, source, conflict, received_at)"
            " SELECT g::text, 'deliver', '2024', 'callback', false, now()"
            " FROM generate_series(1, 30000) AS g"
        )
    subscription_id = leased_from_the_start(engine, settings)
    reads: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM events" in statement and "ORDER BY events.id" in statement:
            reads.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        batch = outbox.next_batch(engine, subscription_id, OWNER, settings)
        assert batch is not None
        outbox.read_ahead(engine, batch, settings)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(reads) == 1 + outbox.READ_AHEAD_CHANGES // settings.webhook_batch_size
    with engine.connect() as conn:
        for statement, parameters in reads:
            explained = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement
            plan = conn.exec_driver_sql(explained, parameters).scalar_one()
            touched = _rows_read_from(plan[0]["Plan"], "events")
            assert touched <= settings.webhook_batch_size + 1, json.dumps(plan)


def _rows_read_from(node: dict[str, Any], table: str) -> int:
    own = node.get("Actual Rows", 0) if node.get("Relation Name") == table else 0
    return max([own, *(_rows_read_from(child, table) for child in node.get("Plans", []))])


def _changes(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [item for _, item in feed.select_changes(conn, 0, 100_000)]
