"""Query parameter types shared by the read endpoints."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

from app.models import STATUS_LENGTH
from app.protocol import valid_status

# pydantic would also take a bare number as a Unix time; the schema says ISO 8601.
_ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _iso_only(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATETIME.match(value):
        raise ValueError("expected an ISO 8601 date and time with an offset (2024-03-01T12:00:00Z)")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError("the time is out of range once converted to UTC") from None


def _stored_status(value: str) -> str:
    # What a stored status can be; also keeps NUL bytes, which PostgreSQL
    # refuses, out of queries.
    if not valid_status(value):
        raise ValueError(f"a status is 1 to {STATUS_LENGTH} printable characters")
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]
StatusName = Annotated[
    str, StringConstraints(min_length=1, max_length=STATUS_LENGTH), AfterValidator(_stored_status)
]


def in_range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    """Conditions for `since <= column < until`; a missing bound is open."""
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions
