"""The status rules and the batch plan: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.ingest import (
    DOCUMENT_COLUMNS,
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    NEW_MESSAGE_COLUMNS,
    STORED,
    Current,
    Submission,
    apply_state,
    first_state,
    plan_batch,
    stored_current,
)
from app.models import Document, Event, Message
from app.protocol import IncomingState, is_final

T0 = datetime(2020, 1, 1, 9, 0, tzinfo=UTC)


def state(status: str, minutes: int | None = None, id_sms: str = "1") -> IncomingState:
    at = None if minutes is None else T0 + timedelta(minutes=minutes)
    raw = "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")
    return IncomingState(id_sms=id_sms, status=status, time_raw=raw, status_at=at)


def run(*states: IncomingState) -> tuple[Current, list[bool]]:
    current = Current(exists=False)
    conflicts = []
    for s in states:
        conflicts.append(apply_state(current, s, "callback"))
        assert current.final == is_final(current.status)  # a field, kept in step
    return current, conflicts


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


@pytest.mark.parametrize(
    "first",
    [state("send"), state("deliver", 5), IncomingState("1", "read", "x", None, 3, "1.5")],
)
def test_a_first_state_is_what_the_rules_make_of_it(first: IncomingState) -> None:
    """The planner's short cut for an id not stored nor seen earlier in the batch."""
    current, conflicts = run(first)
    assert (first_state(first, "callback"), conflicts) == (current, [False])


def test_poll_details_are_kept_even_on_a_final_message() -> None:
    polled = IncomingState("1", "deliver", "", None, num_parts=3, price="1.15")
    current, _ = run(state("deliver", 1), polled)
    assert (current.num_parts, current.price, current.source) == (3, "1.15", "callback")


def test_plan_batch_decides_every_row_without_a_database() -> None:
    now = T0 + timedelta(hours=1)
    stored = {"1": stored_current(["send", None, "", "callback", False, None, None, now])}
    seen = {("1", "send", "")}
    first = Submission([state("send"), state("deliver", 2)], "callback", now, b"doc")
    second = Submission([state("deliver", 2), state("read", 1, "2")], "poll", now)
    plan = plan_batch(stored, seen, [first, second], now, iter([7]))
    assert [(o.acked_ids, o.stored, o.duplicates) for o in plan.outcomes] == [
        (["1"], 1, 1),
        (["1", "2"], 1, 1),
    ]
    documents = [dict(zip(DOCUMENT_COLUMNS, r, strict=True)) for r in plan.documents]
    assert [(d["id"], d["body"], d["acked_ids"], d["duplicate_count"]) for d in documents] == [
        (7, b"doc", "1", 1)
    ]
    changed = [dict(zip(MESSAGE_COLUMNS, r, strict=True)) for r in plan.changed_messages]
    assert [(r["id_sms"], r["status"], r["final"]) for r in changed] == [("1", "deliver", True)]
    assert changed[0]["given_up_at"] is None
    new = [dict(zip(NEW_MESSAGE_COLUMNS, r, strict=True)) for r in plan.new_messages]
    assert [(r["id_sms"], r["status"], r["final"], r["first_seen_at"]) for r in new] == [
        ("2", "read", False, now)
    ]
    events = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in plan.events]
    assert [(e["id_sms"], e["status"], e["source"], e["document_id"]) for e in events] == [
        ("1", "deliver", "callback", 7),
        ("2", "read", "poll", None),
    ]


def test_the_written_columns_are_columns_of_their_tables() -> None:
    for columns, model in (
        (DOCUMENT_COLUMNS, Document),
        (EVENT_COLUMNS, Event),
        (NEW_MESSAGE_COLUMNS, Message),
    ):
        assert set(columns) <= set(model.__table__.c.keys())
        assert len(set(columns)) == len(columns)


def test_the_loaded_columns_are_the_stored_fields_of_current() -> None:
    assert set(STORED) <= set(Message.__table__.c.keys())
    assert {"exists", "touched", "final"}.isdisjoint(STORED)
    assert stored_current(list(range(len(STORED)))).price == STORED.index("price")
