"""What the statistics say about one message, and what reconciliation does about it.

Pure functions over stats.php rows: no database, no HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from app.config import Settings
from app.ingest import Row
from app.models import CONTEXT_FIELD_LENGTH, PHONE_LENGTH, STATUS_LENGTH, TIME_RAW_LENGTH
from app.protocol import IncomingState, is_final, parse_time
from app.provider import StatRow
from app.reconcile_store import Held

# Parts that ended differently: the message counts as its worst part.
MIXED_FINAL_ORDER = ("not_deliver", "expired", "partly_deliver", "deliver")
TRACKED, UNKNOWN = "tracked", "not_held"


@dataclass(frozen=True, slots=True)
class ProviderMessage:
    """One message as the statistics show it, from its part rows."""

    id_sms: str
    status: str
    time_raw: str  # the status's time ("" for send), as callbacks carry it
    parts: tuple[StatRow, ...]

    @classmethod
    def of(cls, id_sms: str, parts: Sequence[StatRow]) -> ProviderMessage:
        status = _message_status({part.status for part in parts})
        changed = max(part.time_change_state for part in parts)
        time_raw = "" if status == "send" else changed[:TIME_RAW_LENGTH]
        return cls(id_sms, status, time_raw, tuple(parts))

    @property
    def final(self) -> bool:
        return is_final(self.status)


def _message_status(statuses: set[str]) -> str:
    pending = sorted(status for status in statuses if not is_final(status))
    if pending:
        return pending[0]
    return next(status for status in MIXED_FINAL_ORDER if status in statuses)


def group(rows: Sequence[StatRow]) -> list[ProviderMessage]:
    by_id: dict[str, list[StatRow]] = {}
    for row in rows:
        if 0 < len(row.status) <= STATUS_LENGTH and row.status.isprintable():
            by_id.setdefault(row.id_sms, []).append(row)
    return [ProviderMessage.of(id_sms, parts) for id_sms, parts in sorted(by_id.items())]


def verdict(ours: Held | None, theirs: ProviderMessage) -> str | None:
    """ "added", "updated", "flagged", "store" (nothing to count), or None (nothing to do)."""
    if ours is None:
        return "added"
    if ours.status is None:
        return "updated"
    if ours.final:
        return "flagged" if theirs.final and theirs.status != ours.status else None
    return "updated" if theirs.final else "store"


def price_sum(parts: Sequence[StatRow]) -> Decimal | None:
    prices = [Decimal(part.price) for part in parts if part.price is not None]
    return sum(prices, Decimal(0)) if prices else None


class Times:
    """Provider wall-clock strings read in the account's zone, each distinct one once.

    A day's messages share few send and status times, and strptime is most
    of the comparison's own cost.
    """

    def __init__(self, settings: Settings) -> None:
        self.zone, self.seen = settings.zone, dict[str, datetime | None]()

    def __call__(self, raw: str) -> datetime | None:
        if raw not in self.seen:
            self.seen[raw] = parse_time(raw, self.zone)
        return self.seen[raw]


def context_row(message: ProviderMessage, settings: Settings, times: Times, now: datetime) -> Row:
    first = min(message.parts, key=lambda part: part.part_no or 0)
    cost = price_sum(message.parts)
    sent_raw = min(part.time for part in message.parts)[:TIME_RAW_LENGTH]
    text = "".join(p.text for p in sorted(message.parts, key=lambda p: p.part_no or 0))
    return {
        "id_sms": message.id_sms,
        "originator": first.originator[:CONTEXT_FIELD_LENGTH] or None,
        "name_delivery": first.name_delivery[:CONTEXT_FIELD_LENGTH] or None,
        "operator": first.operator[:CONTEXT_FIELD_LENGTH] or None,
        "phone": first.phone[:PHONE_LENGTH] or None,
        "sent_at": times(sent_raw),
        "sent_time_raw": sent_raw or None,
        "num_parts": len({part.part_no for part in message.parts}),
        "price": first.price,
        "cost": None if cost is None else format(cost, "f"),
        "text": text if settings.reconcile_store_text else None,
        "updated_at": now,
    }


def incoming(message: ProviderMessage, times: Times) -> IncomingState:
    return IncomingState(
        id_sms=message.id_sms,
        status=message.status,
        time_raw=message.time_raw,
        status_at=times(message.time_raw),
        num_parts=message.parts[0].num_parts,
        price=message.parts[0].price,
    )


def our_status(ours: Held | None) -> str:
    if ours is None:
        return UNKNOWN
    return TRACKED if ours.status is None else ours.status
