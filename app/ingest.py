"""The status rules, and storing a batch of received states in one transaction.

Rules for a message's current status:
- a final status (`deliver`, `not_deliver`, `expired`, `partly_deliver`) never
  changes; a second, different final status is kept in the history, flagged
  as a conflict, and does not replace the first;
- otherwise a final status replaces a non-final one, any other status (an
  unknown one, such as `read`) replaces `send`, and between two states of the
  same rank the later provider time wins: a late or out-of-order state never
  moves a message backwards.

Each (id_sms, status, time) is stored once. `store_batch` runs inside
`db.write_transaction`, so nothing else writes while it reads what is already
stored: deciding what is new is a plain lookup, with no race to lose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from app.models import Document, Event, Message
from app.protocol import IncomingState, is_final, unique_ids

Key = tuple[str, str, str]


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
    exists: bool = True
    touched: bool = False

    @property
    def final(self) -> bool:
        return is_final(self.status)


@dataclass(slots=True)
class _Plan:
    messages: dict[str, Current]
    events: list[dict[str, object]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


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
    if current.final and is_final(state.status) and state.status != current.status:
        current.conflict = True
        return True
    if supersedes(state, current):
        current.status = state.status
        current.status_at = state.status_at
        current.status_time_raw = state.time_raw
        current.source = source
    return False


def store_batch(
    conn: Connection, submissions: Sequence[Submission], now: datetime
) -> list[Outcome]:
    """Store every submission's states; the caller commits, then acknowledges."""
    ids = {state.id_sms for sub in submissions for state in sub.states}
    plan = _Plan(messages=_load_messages(conn, ids))
    seen = _stored_keys(conn, ids)
    for sub in submissions:
        plan.outcomes.append(_plan_submission(plan, sub, seen))
    document_ids = _insert_documents(conn, submissions, plan.outcomes)
    for event in plan.events:
        event["document_id"] = document_ids[id(event["_submission"])]
        del event["_submission"]
    _save_messages(conn, plan.messages, now)
    if plan.events:
        conn.execute(insert(Event), plan.events)
    return plan.outcomes


def _plan_submission(plan: _Plan, sub: Submission, seen: set[Key]) -> Outcome:
    outcome = Outcome(acked_ids=unique_ids(list(sub.states)))
    for state in sub.states:
        if state.key in seen:
            outcome.duplicates += 1
            continue
        seen.add(state.key)
        current = plan.messages.setdefault(state.id_sms, Current(exists=False))
        conflict = apply_state(current, state, sub.source)
        outcome.stored += 1
        outcome.conflicts += conflict
        plan.events.append(_event_row(state, sub, conflict))
    return outcome


def _event_row(state: IncomingState, sub: Submission, conflict: bool) -> dict[str, object]:
    return {
        "id_sms": state.id_sms,
        "status": state.status,
        "time_raw": state.time_raw,
        "status_at": state.status_at,
        "source": sub.source,
        "conflict": conflict,
        "num_parts": state.num_parts,
        "price": state.price,
        "received_at": sub.received_at,
        "_submission": sub,
    }


def _load_messages(conn: Connection, ids: Iterable[str]) -> dict[str, Current]:
    columns = (
        Message.status,
        Message.status_at,
        Message.status_time_raw,
        Message.source,
        Message.conflict,
        Message.num_parts,
        Message.price,
    )
    query = select(Message.id_sms, *columns).where(Message.id_sms.in_(sorted(ids)))
    return {
        row.id_sms: Current(
            status=row.status,
            status_at=row.status_at,
            status_time_raw=row.status_time_raw,
            source=row.source,
            conflict=row.conflict,
            num_parts=row.num_parts,
            price=row.price,
        )
        for row in conn.execute(query)
    }


def _stored_keys(conn: Connection, ids: Iterable[str]) -> set[Key]:
    query = select(Event.id_sms, Event.status, Event.time_raw).where(Event.id_sms.in_(sorted(ids)))
    return {(row.id_sms, row.status, row.time_raw) for row in conn.execute(query)}


def _insert_documents(
    conn: Connection, submissions: Sequence[Submission], outcomes: list[Outcome]
) -> dict[int, int | None]:
    """Keep each raw callback body; map id(submission) to its document id."""
    document_ids: dict[int, int | None] = {id(sub): None for sub in submissions}
    kept = [
        (sub, out) for sub, out in zip(submissions, outcomes, strict=True) if sub.body is not None
    ]
    if not kept:
        return document_ids
    rows = [
        {
            "received_at": sub.received_at,
            "remote_addr": sub.remote_addr,
            "body": sub.body,
            "outcome": "rejected" if sub.error else "stored",
            "error": sub.error,
            "acked_ids": " ".join(out.acked_ids),
            "state_count": len(sub.states),
            "duplicate_count": out.duplicates,
        }
        for sub, out in kept
    ]
    statement = insert(Document).returning(Document.id, sort_by_parameter_order=True)
    for (sub, _), new_id in zip(kept, conn.execute(statement, rows).scalars(), strict=True):
        document_ids[id(sub)] = new_id
    return document_ids


def _save_messages(conn: Connection, messages: dict[str, Current], now: datetime) -> None:
    new_rows: list[dict[str, object]] = []
    changed_rows: list[dict[str, object]] = []
    for id_sms, current in sorted(messages.items()):
        if not current.touched:
            continue
        row = _message_values(current) | {"id_sms_": id_sms, "updated_at": now}
        (changed_rows if current.exists else new_rows).append(row)
    if new_rows:
        conn.execute(insert(Message), [_as_new(row, now) for row in new_rows])
    if changed_rows:
        statement = update(Message).where(Message.id_sms == bindparam("id_sms_"))
        conn.execute(statement, changed_rows)


def _message_values(current: Current) -> dict[str, object]:
    return {
        "status": current.status,
        "final": current.final,
        "conflict": current.conflict,
        "status_at": current.status_at,
        "status_time_raw": current.status_time_raw,
        "source": current.source,
        "num_parts": current.num_parts,
        "price": current.price,
    }


def _as_new(row: dict[str, object], now: datetime) -> dict[str, object]:
    values = {key: value for key, value in row.items() if key != "id_sms_"}
    return values | {"id_sms": row["id_sms_"], "first_seen_at": now}
