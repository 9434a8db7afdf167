"""The status rules, and storing a batch of received states in one transaction.

Rules for a message's current status:
- a final status (`deliver`, `not_deliver`, `expired`, `partly_deliver`) never
  changes; a second, different final status is kept in the history, flagged
  as a conflict, and does not replace the first;
- otherwise a final status replaces a non-final one, any other status (an
  unknown one, such as `read`) replaces `send`, and between two states of the
  same rank the later provider time wins: a late or out-of-order state never
  moves a message backwards;
- a final status ends polling's give-up: `given_up_at` is cleared (the
  message is not "given up" and final at once; `last_given_up_at` keeps it).

Each (id_sms, status, time) is stored once. Pure: `plan_batch` decides what a
batch writes from what is stored, with no database; `store` loads, writes and
commits under the database-wide write lock, so deciding what is new is a plain
lookup, with no race to lose.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from app.protocol import IncomingState, is_final, unique_ids

Key = tuple[str, str, str]
Row = dict[str, Any]
Values = tuple[Any, ...]  # one row's values, in the order of its table's columns below


@dataclass(slots=True)
class Submission:
    """One request's (or one poll answer's) states, stored together."""

    states: Sequence[IncomingState]
    source: str  # "callback" or "poll"
    received_at: datetime
    body: bytes | None = None  # the raw callback document, kept for audit
    remote_addr: str | None = None
    error: str | None = None  # set for a rejected document: kept, nothing stored


@dataclass(slots=True)
class Outcome:
    acked_ids: list[str]
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0


@dataclass(slots=True)
class Current:
    """A message's current status while a batch is applied to it."""

    status: str | None = None
    status_at: datetime | None = None
    status_time_raw: str | None = None
    source: str | None = None
    conflict: bool = False
    num_parts: int | None = None
    price: str | None = None
    given_up_at: datetime | None = None
    exists: bool = True
    touched: bool = False
    # is_final(status), kept in step wherever status is set: read about three
    # times a state, it was 3.5% of a group commit as a property.
    final: bool = field(init=False)

    def __post_init__(self) -> None:
        self.final = is_final(self.status)


# The `messages` columns a batch reads and writes back: Current's stored fields,
# declared once; the store's SELECT and each Current are built from it.
STORED = tuple(f.name for f in fields(Current) if f.name not in {"exists", "touched", "final"})

# The columns of the rows a plan writes, in the order of their values. Rows are
# plain tuples: a dict per row, then its conversion to the driver's tuple, cost
# more than the rules themselves (planning and conversion: 8.8 -> 2.7 us a state).
DOCUMENT_COLUMNS = (
    "id",
    "received_at",
    "remote_addr",
    "body",
    "outcome",
    "error",
    "acked_ids",
    "state_count",
    "duplicate_count",
)
EVENT_COLUMNS = (
    "id_sms",
    "status",
    "time_raw",
    "status_at",
    "source",
    "conflict",
    "num_parts",
    "price",
    "received_at",
    "document_id",
)
MESSAGE_COLUMNS = ("id_sms", *STORED, "final", "updated_at")
NEW_MESSAGE_COLUMNS = (*MESSAGE_COLUMNS, "first_seen_at")


def stored_current(values: Sequence[Any]) -> Current:
    """A Current from one loaded row's values, in STORED order."""
    return Current(**dict(zip(STORED, values, strict=True)))


def first_state(state: IncomingState, source: str) -> Current:
    """What `apply_state` makes of a message not stored nor seen before: the
    state itself (the common case, without the rules' steps)."""
    # Every field by position: keywords here cost 9% of planning's instructions (callgrind).
    return Current(
        state.status,
        state.status_at,
        state.time_raw,
        source,
        False,  # conflict
        state.num_parts,
        state.price,
        None,  # given_up_at
        False,  # exists
        True,  # touched
    )


def supersedes(state: IncomingState, current: Current) -> bool:
    if current.status is None:
        return True
    if current.final:
        return False
    if is_final(state.status):
        return True
    new_rank, old_rank = _rank(state.status), _rank(current.status)
    if new_rank != old_rank:
        return new_rank > old_rank
    if state.status_at is None:
        return False
    return current.status_at is None or state.status_at > current.status_at


def _rank(status: str) -> int:
    return 0 if status == "send" else 1


def apply_state(current: Current, state: IncomingState, source: str) -> bool:
    """Apply one new state; True when it is a conflicting final status."""
    current.touched = True
    if state.num_parts is not None:
        current.num_parts = state.num_parts
    if state.price is not None:
        current.price = state.price
    if current.final:
        if state.status != current.status and is_final(state.status):
            current.conflict = True
            return True
    elif supersedes(state, current):
        current.status = state.status
        current.status_at = state.status_at
        current.status_time_raw = state.time_raw
        current.source = source
        current.final = is_final(state.status)
    if current.final:
        current.given_up_at = None  # polling gave up too early; `last_given_up_at` keeps it
    return False


@dataclass(slots=True)
class Plan:
    """What one batch writes, decided before anything is written."""

    outcomes: list[Outcome]
    documents: list[Values]  # DOCUMENT_COLUMNS: the raw documents of those that have one
    events: list[Values]  # EVENT_COLUMNS: the new states
    new_messages: list[Values]  # NEW_MESSAGE_COLUMNS
    changed_messages: list[Values]  # MESSAGE_COLUMNS


def batch_ids(submissions: Sequence[Submission]) -> list[str]:
    """The ids a batch touches, sorted (rows are then always visited in one order)."""
    return sorted({state.id_sms for sub in submissions for state in sub.states})


def documents_wanted(submissions: Sequence[Submission]) -> int:
    """How many document ids `plan_batch` needs: one per submission with a body."""
    return sum(sub.body is not None for sub in submissions)


def plan_batch(
    messages: dict[str, Current],
    seen: set[Key],
    submissions: Sequence[Submission],
    now: datetime,
    document_ids: Iterator[int],
) -> Plan:
    """Apply the batch to the stored `messages` and `seen` keys, in order of arrival;
    `document_ids` are the ids drawn for its documents, in order."""
    outcomes: list[Outcome] = []
    documents: list[Values] = []
    events: list[Values] = []
    for sub in submissions:
        document_id = None if sub.body is None else next(document_ids)
        outcome = _plan_submission(messages, sub, seen, document_id, events)
        outcomes.append(outcome)
        if document_id is not None:
            documents.append(_document_row(sub, outcome, document_id))
    new_messages, changed_messages = _message_rows(messages, now)
    return Plan(outcomes, documents, events, new_messages, changed_messages)


def _plan_submission(
    messages: dict[str, Current],
    sub: Submission,
    seen: set[Key],
    document_id: int | None,
    events: list[Values],
) -> Outcome:
    """Apply one submission's new states to `messages`, their rows added to `events`."""
    source, received_at = sub.source, sub.received_at
    stored = duplicates = conflicts = 0
    for state in sub.states:
        key = state.key
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        current = messages.get(state.id_sms)
        if current is None:
            messages[state.id_sms] = first_state(state, source)
            conflict = False
        else:
            conflict = apply_state(current, state, source)
            conflicts += conflict
        stored += 1
        events.append(
            (
                state.id_sms,
                state.status,
                state.time_raw,
                state.status_at,
                source,
                conflict,
                state.num_parts,
                state.price,
                received_at,
                document_id,
            )  # EVENT_COLUMNS
        )
    acked_ids = unique_ids(list(sub.states))
    return Outcome(acked_ids, stored=stored, duplicates=duplicates, conflicts=conflicts)


def _document_row(sub: Submission, outcome: Outcome, document_id: int) -> Values:
    return (
        document_id,
        sub.received_at,
        sub.remote_addr,
        sub.body,
        "rejected" if sub.error else "stored",
        sub.error,
        " ".join(outcome.acked_ids),
        len(sub.states),
        outcome.duplicates,
    )  # DOCUMENT_COLUMNS


def _message_rows(messages: dict[str, Current], now: datetime) -> tuple[list[Values], list[Values]]:
    """The rows to insert and to update for the messages the batch touched."""
    new_rows: list[Values] = []
    changed_rows: list[Values] = []
    for id_sms, current in sorted(messages.items()):
        if not current.touched:
            continue
        if current.exists:
            changed_rows.append((id_sms, *_message_values(current), now))  # MESSAGE_COLUMNS
        else:
            new_rows.append((id_sms, *_message_values(current), now, now))  # NEW_MESSAGE_COLUMNS
    return new_rows, changed_rows


# A Current's values between id_sms and updated_at in MESSAGE_COLUMNS, in one C call.
_message_values = attrgetter(*MESSAGE_COLUMNS[1:-1])
