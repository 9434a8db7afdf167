"""Tracking sent ids: the sender registers the ids the provider gave it.

A tracked message is stored with no status yet (`status` NULL, `tracked_at`
set), so it shows in the read API as waiting, and the poller asks the provider
about it if no callback comes. The ids come as a JSON list or as the
provider's own send answer (`<information number_sms=".." id_sms=".."
parts="..">send</information>`, section 4 of the protocol notes), where an
entry without `id_sms` is a message the provider did not accept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring
from sqlalchemy import Connection, Engine, Integer, Table, bindparam, func, select, update

from app.db import write_transaction
from app.models import Message, UTCDateTime
from app.protocol import ID_SMS, DocumentError, reading
from app.store import insert_rows, one_of

MESSAGES = cast(Table, Message.__table__)
_PARTS = re.compile(r"[0-9]{1,9}")
MAX_TEXT = 200  # longest provider sentence or number_sms echoed back


@dataclass(frozen=True, slots=True)
class Sent:
    """One message the provider accepted."""

    id_sms: str
    num_parts: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """One entry of a send answer without a usable id: nothing is recorded for it."""

    number_sms: str | None
    error: str


@dataclass(slots=True)
class SendAnswer:
    sent: list[Sent] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)


@dataclass(slots=True)
class Tracked:
    tracked: list[str] = field(default_factory=list)  # new to us
    already_known: list[str] = field(default_factory=list)


class SendAnswerError(DocumentError):
    """The whole send answer is the provider's `<error>`: nothing was sent."""


def _text(value: str | None) -> str:
    flat = " ".join((value or "").split())
    return "".join(c for c in flat if c.isprintable())[:MAX_TEXT]


def parse_send_answer(body: bytes, max_entries: int) -> SendAnswer:
    """The provider's send answer; DocumentError if it cannot be read."""
    with reading(body):
        root: Element = fromstring(body, forbid_dtd=True)
    if root.tag != "response":
        raise DocumentError(f"root element must be <response>, not <{root.tag}>")
    error = root.find("error")
    if error is not None:
        raise SendAnswerError(f"the provider refused the send: {_text(''.join(error.itertext()))}")
    entries = root.findall("information")
    if len(entries) > max_entries:
        raise DocumentError(f"more than {max_entries} <information> entries")
    answer = SendAnswer()
    for entry in entries:
        _read_entry(entry, answer)
    return answer


def _read_entry(entry: Element, answer: SendAnswer) -> None:
    id_sms = entry.get("id_sms")
    number = entry.get("number_sms")
    number_sms = _text(number) if number is not None else None
    if id_sms is None:
        answer.failed.append(Failed(number_sms, _text(entry.text) or "no id_sms"))
    elif not ID_SMS.fullmatch(id_sms):
        answer.failed.append(Failed(number_sms, "id_sms is not 1 to 19 digits"))
    else:
        parts = entry.get("parts", "")
        num_parts = int(parts) if _PARTS.fullmatch(parts) else None
        answer.sent.append(Sent(id_sms, num_parts))


def track(engine: Engine, sent: Sequence[Sent], now: datetime) -> Tracked:
    """Record `sent` as tracked; idempotent. Each id is listed once, in order."""
    unique = list({s.id_sms: s for s in sent}.values())
    if not unique:
        return Tracked()
    with write_transaction(engine) as conn:
        return _track(conn, unique, now)


def _track(conn: Connection, sent: list[Sent], now: datetime) -> Tracked:
    ids = [s.id_sms for s in sent]
    query = select(Message.id_sms).where(one_of(MESSAGES.c.id_sms, ids, conn))
    known = set(conn.scalars(query))
    new_rows = [_new_row(s, now) for s in sent if s.id_sms not in known]
    insert_rows(conn, MESSAGES, new_rows)
    _mark_known(conn, [s for s in sent if s.id_sms in known], now)
    result = Tracked()
    for id_sms in ids:
        (result.already_known if id_sms in known else result.tracked).append(id_sms)
    return result


def _new_row(sent: Sent, now: datetime) -> dict[str, object]:
    return {
        "id_sms": sent.id_sms,
        "status": None,
        "final": False,
        "conflict": False,
        "num_parts": sent.num_parts,
        "first_seen_at": now,
        "updated_at": now,
        "tracked_at": now,
    }


def _mark_known(conn: Connection, sent: list[Sent], now: datetime) -> None:
    """Known messages (a callback came first): set what is still unknown only."""
    if not sent:
        return
    columns = MESSAGES.c
    statement = (
        update(MESSAGES)
        .where(columns.id_sms == bindparam("key"))
        .values(
            tracked_at=func.coalesce(columns.tracked_at, bindparam("now", type_=UTCDateTime())),
            num_parts=func.coalesce(columns.num_parts, bindparam("parts", type_=Integer())),
        )
    )
    rows = [{"key": s.id_sms, "now": now, "parts": s.num_parts} for s in sent]
    conn.execute(statement, rows)
