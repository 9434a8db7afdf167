"""The store: loading, planning and writing a batch, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update

from app.db import write_transaction
from app.ingest import Submission
from app.models import Message
from app.protocol import IncomingState
from app.store import commit, store_batch, store_states
from tests.conftest import rows
from tests.test_ingest import state


def test_a_batch_dedupes_across_its_submissions(engine: Engine) -> None:
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


def test_store_states_is_the_one_call_for_a_list_of_states(engine: Engine) -> None:
    """The entry point for pollers and reconciliation: same rules as callbacks."""
    now = datetime.now(UTC)
    states = [state("send", id_sms="3"), state("deliver", 4, "3"), state("send", id_sms="3")]
    outcome = store_states(engine, states, "poll", now)
    assert (outcome.acked_ids, outcome.stored, outcome.duplicates) == (["3"], 2, 1)
    again = store_states(engine, [IncomingState("3", "read", "x", None, 2, "1.5")], "poll")
    assert (again.stored, again.conflicts) == (1, 0)
    found = rows(engine, "SELECT status, final, source, num_parts, price FROM messages")
    assert found == [("deliver", True, "poll", 2, "1.5")]


def test_times_at_the_ends_of_the_calendar_are_stored_and_read_back(engine: Engine) -> None:
    now = datetime.now(UTC)
    ends = [datetime(1, 1, 1, 12, tzinfo=UTC), datetime(9999, 12, 31, 11, 59, 59, tzinfo=UTC)]
    states = [IncomingState(str(n), "read", f"t{n}", at) for n, at in enumerate(ends)]
    commit(engine, [Submission(states, "callback", now, b"doc")], now)
    with engine.connect() as conn:
        found = conn.execute(select(Message.status_at).order_by(Message.id_sms)).scalars().all()
    assert found == ends
