"""The overview's closed intervals, stored: a restart reads them, counts only the rest,
and concurrent counters store each interval once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from app.config import Settings
from app.db import write_transaction
from app.ui import bucket_store
from app.ui.bucket_store import PIECE_BUCKETS, Counts
from app.ui.buckets import EventBuckets, bucket_of
from tests.api_helpers import store
from tests.conftest import rows

NOW = datetime(2026, 3, 1, 12, 40, tzinfo=UTC)  # buckets up to 12:15-12:30 are closed
FIRST = bucket_of(NOW - timedelta(days=3))
CLOSED_END = bucket_of(datetime(2026, 3, 1, 12, 30, tzinfo=UTC))


def _totals(counts: Counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for by_status in counts.values():
        for status, count in by_status.items():
            total[status] = total.get(status, 0) + count
    return total


def _count_from_scratch(engine: Engine) -> Counts:
    with engine.connect() as conn:
        return EventBuckets().counts(conn, FIRST, NOW)


def _stored_table(engine: Engine) -> list[tuple[object, ...]]:
    return rows(engine, "SELECT bucket, status, count FROM event_bucket_counts ORDER BY 1, 2")


def _delete_events(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        conn.execute(text("DELETE FROM events"))


def test_a_restart_reads_the_stored_intervals_without_counting_them(
    settings: Settings, engine: Engine
) -> None:
    two_days_ago = NOW - timedelta(days=2)
    store(engine, settings, [("1", "send", ""), ("2", "send", "")], two_days_ago)
    store(engine, settings, [("1", "deliver", "2026-03-01 10:00:00")], NOW - timedelta(hours=3))
    first_count = _count_from_scratch(engine)
    assert _totals(first_count) == {"send": 2, "deliver": 1}
    assert _stored_table(engine) == [
        (bucket_of(two_days_ago), "send", 2),
        (bucket_of(NOW - timedelta(hours=3)), "deliver", 1),
    ]
    assert rows(engine, "SELECT count(*), min(bucket), max(bucket) FROM event_buckets") == [
        (CLOSED_END - FIRST, FIRST, CLOSED_END - 1)
    ]
    # Were the closed intervals counted again, they would now be empty.
    _delete_events(engine)
    assert _count_from_scratch(engine) == first_count


def test_an_interval_with_no_events_is_known_not_missing(
    settings: Settings, engine: Engine
) -> None:
    assert _count_from_scratch(engine) == {}
    assert rows(engine, "SELECT count(*) FROM event_buckets") == [(CLOSED_END - FIRST,)]
    assert _stored_table(engine) == []
    # A state that could not really land in a closed interval: were the empty
    # intervals missing rather than known, a restart would count it.
    store(engine, settings, [("1", "send", "")], NOW - timedelta(days=1))
    assert _count_from_scratch(engine) == {}


def test_only_the_intervals_not_yet_stored_are_counted(settings: Settings, engine: Engine) -> None:
    """As after a first count that was interrupted after its first day."""
    store(engine, settings, [("1", "send", "")], NOW - timedelta(days=2, hours=23))
    store(engine, settings, [("2", "send", "")], NOW - timedelta(days=1))
    day = bucket_store.missing(set(), FIRST, CLOSED_END)[0]
    assert day == (FIRST, FIRST + PIECE_BUCKETS)
    bucket_store.save(engine, *day, {bucket_of(NOW - timedelta(days=2, hours=23)): {"x": 5}})
    _delete_events(engine)
    store(engine, settings, [("3", "send", "")], NOW - timedelta(days=1))
    # The stored day is read as it is (however wrong); the rest counted now.
    assert _totals(_count_from_scratch(engine)) == {"x": 5, "send": 1}


def test_missing_intervals_come_in_pieces_of_a_day_at_most() -> None:
    known = {10, 11, 15}
    assert bucket_store.missing(known, 8, 17) == [(8, 10), (12, 15), (16, 17)]
    pieces = bucket_store.missing(set(), 0, 2 * PIECE_BUCKETS + 1)
    assert pieces == [(0, 96), (96, 192), (192, 193)]
    assert bucket_store.missing(set(range(5)), 0, 5) == []


def test_a_second_save_of_the_same_intervals_changes_nothing(engine: Engine) -> None:
    first = bucket_store.save(engine, 100, 104, {101: {"send": 3}})
    again = bucket_store.save(engine, 100, 106, {101: {"send": 99}, 102: {"deliver": 1}, 105: {}})
    assert first == {101: {"send": 3}}
    assert again == {101: {"send": 3}}  # what is stored, not what the latecomer counted
    assert _stored_table(engine) == [(101, "send", 3)]
    assert rows(engine, "SELECT bucket FROM event_buckets ORDER BY 1") == [
        (b,) for b in range(100, 106)
    ]


def test_concurrent_counters_store_each_interval_once(settings: Settings, engine: Engine) -> None:
    moments = [NOW - timedelta(days=d, minutes=7 * d) for d in range(1, 3)]
    for number, moment in enumerate(moments):
        store(engine, settings, [(str(number), "send", ""), (str(number), "deliver", "t")], moment)
    start = threading.Barrier(4)
    results: list[Counts] = []

    def count() -> None:
        start.wait()
        results.append(_count_from_scratch(engine))

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4 and all(result == results[0] for result in results)
    assert _totals(results[0]) == {"send": 2, "deliver": 2}
    assert rows(engine, "SELECT sum(count) FROM event_bucket_counts") == [(4,)]
    assert rows(engine, "SELECT count(*), count(DISTINCT bucket) FROM event_buckets") == [
        (CLOSED_END - FIRST, CLOSED_END - FIRST)
    ]
