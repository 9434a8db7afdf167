"""The status rules, and `store_batch` on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from app.db import write_transaction
from app.ingest import Current, Submission, apply_state, store_batch
from app.models import Message
from app.protocol import IncomingState
from tests.conftest import rows

T0 = datetime(2020, 1, 1, 9, 0, tzinfo=UTC)


def state(status: str, minutes: int | None = None, id_sms: str = "1") -> IncomingState:
    at = None if minutes is None else T0 + timedelta(minutes=minutes)
    raw = "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")
    return IncomingState(id_sms=id_sms, status=status, time_raw=raw, status_at=at)


def run(*states: IncomingState) -> tuple[Current, list[bool]]:
    current = Current(exists=False)
    return current, [apply_state(current, s, "callback") for s in states]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ((state("send"), state("deliver", 5)), "deliver"),
        ((state("deliver", 5), state("send")), "deliver"),
        ((state("send"), state("read", 3)), "read"),
        ((state("read", 3), state("send")), "read"),
        ((state("read", 3), state("deliver", 1)), "deliver"),
        ((state("deliver", 1), state("read", 3)), "deliver"),
        ((state("queued", 5), state("accepted", 3)), "queued"),
        ((state("accepted", 3), state("queued", 5)), "queued"),
        ((state("queued", 5), state("accepted")), "queued"),
        ((state("expired", 9), state("deliver", 1)), "expired"),
    ],
)
def test_current_status_never_moves_back(states: tuple[IncomingState, ...], expected: str) -> None:
    current, _ = run(*states)
    assert current.status == expected


def test_a_different_second_final_status_is_a_conflict_and_loses() -> None:
    current, conflicts = run(state("deliver", 1), state("not_deliver", 2), state("deliver", 1))
    assert (current.status, current.conflict, conflicts) == ("deliver", True, [False, True, False])


def test_poll_details_are_kept_even_on_a_final_message() -> None:
    polled = IncomingState("1", "deliver", "", None, num_parts=3, price="1.15")
    current, _ = run(state("deliver", 1), polled)
    assert (current.num_parts, current.price, current.source) == (3, "1.15", "callback")


def test_store_batch_dedupes_across_submissions_of_one_batch(engine: Engine) -> None:
    now = datetime.now(UTC)
    first = Submission([state("send", id_sms="7"), state("deliver", 2, "7")], "callback", now, b"a")
    second = Submission([state("deliver", 2, "7"), state("send", id_sms="8")], "poll", now)
    with write_transaction(engine) as conn:
        outcomes = store_batch(conn, [first, second], now)
    assert [(o.acked_ids, o.stored, o.duplicates) for o in outcomes] == [
        (["7"], 2, 0),
        (["7", "8"], 1, 1),
    ]
    assert rows(engine, "SELECT id_sms, status, source FROM messages ORDER BY id_sms") == [
        ("7", "deliver", "callback"),
        ("8", "send", "poll"),
    ]
    assert rows(engine, "SELECT count(*) FROM documents") == [(1,)]
    doc_ids = rows(engine, "SELECT DISTINCT document_id FROM events ORDER BY document_id")
    assert len(doc_ids) == 2 and (None,) in doc_ids  # the poll's state has no document


def test_a_batch_updates_known_messages_and_inserts_new_ones(engine: Engine) -> None:
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        store_batch(
            conn,
            [Submission([state("send", id_sms=str(n)) for n in range(50)], "callback", now)],
            now,
        )
    later = now + timedelta(seconds=5)
    final = [state("deliver", 1, str(n)) for n in range(0, 60, 2)]
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission(final, "callback", later)], later)
    statuses = dict(rows(engine, "SELECT id_sms, status FROM messages"))
    assert len(statuses) == 55  # 0..49, then 50..58 step 2 are new
    assert all(statuses[str(n)] == ("deliver" if n % 2 == 0 else "send") for n in range(50))
    assert all(statuses[str(n)] == "deliver" for n in range(50, 60, 2))
    assert rows(engine, "SELECT count(*) FROM messages WHERE updated_at > first_seen_at") == [(25,)]


def test_stored_times_compare_as_times(engine: Engine) -> None:
    """A range on a timestamp written by a batch finds it (on SQLite the text
    format must be SQLAlchemy's own, or comparisons go wrong)."""
    now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("send", id_sms="5")], "callback", now)], now)
    with engine.connect() as conn:
        found = conn.execute(
            select(Message.id_sms).where(
                Message.updated_at >= now, Message.updated_at < now + timedelta(seconds=1)
            )
        ).all()
        stored_at = conn.execute(select(Message.updated_at)).scalar_one()
    assert [row.id_sms for row in found] == ["5"]
    assert stored_at == now


def test_a_final_status_clears_given_up_but_not_its_history(engine: Engine) -> None:
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("send", id_sms="9")], "poll", now)], now)
        conn.execute(
            update(Message).values(given_up_at=now, last_given_up_at=now)  # as the poller does
        )
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("read", 5, "9")], "poll", now)], now)
    assert rows(engine, "SELECT given_up_at IS NOT NULL FROM messages") == [(True,)]
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("deliver", 9, "9")], "callback", now)], now)
    query = "SELECT final, given_up_at IS NULL, last_given_up_at IS NOT NULL FROM messages"
    assert rows(engine, query) == [(True, True, True)]
