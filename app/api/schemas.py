"""The read API's JSON shapes. Other tools are written against these names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app import cursors

EVENT_EXAMPLE: dict[str, Any] = {
    "id": 41,
    "status": "deliver",
    "time_raw": "2020-01-01 12:57:46",
    "status_at": "2020-01-01T09:57:46Z",
    "source": "callback",
    "conflict": False,
    "num_parts": None,
    "price": None,
    "received_at": "2020-01-01T09:57:48.120533Z",
}
SUMMARY_EXAMPLE: dict[str, Any] = {
    "id_sms": "12345",
    "status": "deliver",
    "final": True,
    "status_at": "2020-01-01T09:57:46Z",
    "status_time_raw": "2020-01-01 12:57:46",
    "num_parts": None,
    "price": None,
    "source": "callback",
    "conflict": False,
    "first_seen_at": "2020-01-01T09:57:40.318251Z",
    "updated_at": "2020-01-01T09:57:48.120533Z",
    "tracked_at": None,
    "given_up": False,
    "given_up_at": None,
}
SEND_EVENT_EXAMPLE = EVENT_EXAMPLE | {
    "id": 17,
    "status": "send",
    "time_raw": "",
    "status_at": None,
    "received_at": "2020-01-01T09:57:40.318251Z",
}
MESSAGE_EXAMPLE = SUMMARY_EXAMPLE | {"events": [SEND_EVENT_EXAMPLE, EVENT_EXAMPLE]}
CURSOR_EXAMPLE = cursors.encode(cursors.CHANGES, 41)


class Event(BaseModel):
    """One stored state of a message."""

    id: int = Field(description="Its position in the change feed's total order.")
    status: str
    time_raw: str = Field(description='The provider\'s time string as received ("" if none).')
    status_at: datetime | None = Field(
        description="`time_raw` read in TARGETSMS_TIMEZONE, in UTC; null if unreadable."
    )
    source: str = Field(description='"callback", "poll" or "reconcile".')
    conflict: bool = Field(description="A second, different final status: kept, not applied.")
    num_parts: int | None
    price: str | None = Field(description="As the provider wrote it (a decimal string).")
    received_at: datetime = Field(description="When this service stored it (UTC).")

    model_config = ConfigDict(json_schema_extra={"example": EVENT_EXAMPLE})


class MessageSummary(BaseModel):
    """A message's current status, without its history (as listed)."""

    id_sms: str
    status: str | None = Field(description="null while the message is only tracked.")
    final: bool = Field(description="deliver, not_deliver, expired, partly_deliver: never changes.")
    status_at: datetime | None = Field(description="The current status's provider time, UTC.")
    status_time_raw: str | None = Field(description="The provider's raw time string.")
    num_parts: int | None
    price: str | None = Field(description="As the provider wrote it (a decimal string).")
    source: str | None = Field(
        description='Where the current status came from: "callback", "poll", "reconcile".'
    )
    conflict: bool = Field(description="A conflicting second final status was received.")
    first_seen_at: datetime
    updated_at: datetime = Field(description="Last change to this record (UTC).")
    tracked_at: datetime | None = Field(description="When a sender registered it for polling.")
    given_up: bool = Field(description="Polling gave up on it without a final status.")
    given_up_at: datetime | None

    model_config = ConfigDict(json_schema_extra={"example": SUMMARY_EXAMPLE})


class Message(MessageSummary):
    """A message with its full history."""

    events: list[Event] = Field(
        description="Every stored state, in the order stored (oldest first)."
    )

    model_config = ConfigDict(json_schema_extra={"example": MESSAGE_EXAMPLE})


class MessagePage(BaseModel):
    """One page of messages. Items carry no `events`: fetch one message for its history."""

    items: list[MessageSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )

    model_config = ConfigDict(
        json_schema_extra={"example": {"items": [SUMMARY_EXAMPLE], "next_cursor": None}}
    )


class Change(BaseModel):
    """One stored state, as the change feed hands it out."""

    cursor: str = Field(description="Resume after this state with `after=<cursor>`.")
    id_sms: str
    status: str
    time_raw: str
    status_at: datetime | None
    source: str
    conflict: bool
    received_at: datetime
    num_parts: int | None
    price: str | None


CHANGE_EXAMPLE = {
    "cursor": CURSOR_EXAMPLE,
    **{key: value for key, value in EVENT_EXAMPLE.items() if key != "id"},
    "id_sms": "12345",
}


class ChangePage(BaseModel):
    items: list[Change]
    next_cursor: str = Field(
        description="The last item's cursor, or the `after` given when nothing is new: store it "
        "and pass it as `after` next time."
    )

    model_config = ConfigDict(
        json_schema_extra={"example": {"items": [CHANGE_EXAMPLE], "next_cursor": CURSOR_EXAMPLE}}
    )


class Stats(BaseModel):
    since: datetime | None
    until: datetime | None
    messages: int = Field(description="Messages last updated in the range.")
    by_status: dict[str, int] = Field(
        description='Those messages by current status; "tracked" for no status yet.'
    )
    final: int
    delivered: int = Field(description="Of them, current status `deliver`.")
    delivery_rate: float | None = Field(description="delivered / final; null when none is final.")
    duplicates: int = Field(
        description="States received again (callback documents received in the range; "
        "documents are purged after RAW_RETENTION_DAYS)."
    )
    conflicts: int = Field(description="Conflicting final statuses received in the range.")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "since": "2020-01-01T00:00:00Z",
                "until": None,
                "messages": 4,
                "by_status": {"deliver": 2, "not_deliver": 1, "send": 1},
                "final": 3,
                "delivered": 2,
                "delivery_rate": 0.6667,
                "duplicates": 5,
                "conflicts": 0,
            }
        }
    )
