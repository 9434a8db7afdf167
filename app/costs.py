"""What the SMS cost: parts, messages and money per day, sender or status.

Money is added as `Decimal` from the provider's decimal strings, never as a
float. A message counts with the prices stats.php listed for its parts
(`message_context.cost`, their exact sum); without statistics, with the price
state.php gave (`messages.price`, the price of ONE part, times `num_parts`).
A message with neither is counted as a message but not in the money, and
shown in `unpriced_messages`.

A message's day is its send day in the account's zone (from the statistics),
else the day of its status, else the day we first saw it.
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal, NamedTuple, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, func, select

from app.models import Message, MessageContext

GroupBy = Literal["day", "originator", "status"]
TRACKED = "tracked"  # the status key of a message with no status yet
CONTEXT = cast(Table, MessageContext.__table__)
# A cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(slots=True)
class CostLine:
    key: str | None  # None: no originator known
    messages: int = 0
    parts: int = 0
    money: Decimal = Decimal(0)
    unpriced_messages: int = 0

    def add(self, parts: int | None, money: Decimal | None) -> None:
        self.messages += 1
        self.parts += parts or 0
        if money is None:
            self.unpriced_messages += 1
        else:
            self.money += money


def day_bounds(since: date, until: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start of `since`, start of the day after `until`) in `zone`."""
    start = datetime.combine(since, time(), zone)
    end = datetime.combine(until + timedelta(days=1), time(), zone)
    return start, end


class Priced(NamedTuple):
    at: datetime  # the message's moment (see the module's docstring)
    status: str | None
    originator: str | None
    parts: int | None
    money: Decimal | None  # None: unpriced


def costs(
    conn: Connection, since: date, until: date, group_by: GroupBy, zone: ZoneInfo
) -> list[CostLine]:
    """One line per key, in key order (days and names ascending, unknown last)."""
    lines: dict[str | None, CostLine] = {}
    for row in priced(conn, *day_bounds(since, until, zone)):
        key = _key(group_by, row.at, row.status, row.originator, zone)
        lines.setdefault(key, CostLine(key)).add(row.parts, row.money)
    return sorted(lines.values(), key=lambda line: (line.key is None, line.key or ""))


def totals_since(
    conn: Connection, sinces: Sequence[date], until: date, zone: ZoneInfo
) -> list[CostLine]:
    """For each day of `sinces`, `total(costs(conn, since, until, ...))`, from one read.

    The rows are added up per day once, and each period sums its days. A row's
    day is the one whose `day_bounds` hold it, the very test `costs` filters
    with; not its local date, which differs in the hour a zone repeats after
    midnight (America/Santiago's autumn)."""
    first = min(sinces)
    days = [first + timedelta(days=n) for n in range((until - first).days + 1)]
    starts = [day_bounds(day, day, zone)[0] for day in days]
    per_day = [CostLine(day.isoformat()) for day in days]
    for row in priced(conn, *day_bounds(first, until, zone)):
        per_day[bisect_right(starts, row.at) - 1].add(row.parts, row.money)
    return [
        total(line for day, line in zip(days, per_day, strict=True) if day >= since)
        for since in sinces
    ]


def priced(conn: Connection, start: datetime, end: datetime) -> Iterator[Priced]:
    """Every message whose moment is in [start, end), with its parts and money."""
    when = func.coalesce(MessageContext.sent_at, Message.status_at, Message.first_seen_at)
    query = (
        select(
            when.label("at"),
            Message.status,
            Message.num_parts,
            Message.price,
            MessageContext.originator,
            MessageContext.num_parts.label("context_parts"),
            MessageContext.cost,
        )
        .select_from(Message)
        .outerjoin(CONTEXT, MessageContext.id_sms == Message.id_sms)
        .where(when >= start, when < end)
    )
    for row in conn.execution_options(yield_per=10_000).execute(query):
        if row.cost is not None or row.context_parts is not None:
            yield Priced(row.at, row.status, row.originator, row.context_parts, _decimal(row.cost))
        else:
            money = _state_money(row.price, row.num_parts)
            yield Priced(row.at, row.status, row.originator, row.num_parts, money)


def total(lines: Iterable[CostLine]) -> CostLine:
    whole = CostLine(None)
    for line in lines:
        whole.messages += line.messages
        whole.parts += line.parts
        whole.money += line.money
        whole.unpriced_messages += line.unpriced_messages
    return whole


def _key(
    group_by: GroupBy, at: datetime, status: str | None, originator: str | None, zone: ZoneInfo
) -> str | None:
    if group_by == "day":
        return at.astimezone(zone).date().isoformat()
    if group_by == "status":
        return status if status is not None else TRACKED
    return originator


def _decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _state_money(price: str | None, num_parts: int | None) -> Decimal | None:
    per_part = _decimal(price)
    if per_part is None or num_parts is None:
        return None
    return per_part * num_parts


def money_text(value: Decimal) -> str:
    return format(value, "f")


def to_csv(lines: Iterable[CostLine], group_by: GroupBy) -> str:
    """A header row, then one row per line; UTF-8 with a BOM so spreadsheets read Cyrillic."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([group_by, "messages", "parts", "money", "unpriced_messages"])
    for line in lines:
        key = _cell(line.key or "")
        writer.writerow(
            [key, line.messages, line.parts, money_text(line.money), line.unpriced_messages]
        )
    return out.getvalue()


def _cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value
