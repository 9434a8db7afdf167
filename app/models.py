"""The tables.

- `messages`: one row per provider message id, with its current status.
- `events`: every distinct state ever received, once per (id_sms, status, time);
  `events.id` is the change feed's total order.
- `documents`: the raw callback bodies, for audit and replay (purged after the
  retention period).
- `instance_settings`: values the service generates for itself (the callback
  token when none is configured).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

ID_SMS_LENGTH = 19
STATUS_LENGTH = 64
TIME_RAW_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every database.

    SQLite has no timestamp type and drops the offset; this keeps UTC there too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id_sms: Mapped[str] = mapped_column(String(ID_SMS_LENGTH), unique=True)
    # None: tracked (registered by the sender) but no state received yet.
    status: Mapped[str | None] = mapped_column(String(STATUS_LENGTH))
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_time_raw: Mapped[str | None] = mapped_column(String(TIME_RAW_LENGTH))
    source: Mapped[str | None] = mapped_column(String(16))
    num_parts: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[str | None] = mapped_column(String(32))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    tracked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    given_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_messages_final_updated_at", "final", "updated_at"),
        # The poller walks the pending messages (not final, not given up) by id.
        Index("ix_messages_pending", "final", "given_up_at", "id"),
        # --- dashboard (issue 13) ---
        # Waiting messages by age (the overview, the silence check): only the
        # few rows still waiting are in it, so it costs the write path little.
        Index(
            "ix_messages_waiting",
            "first_seen_at",
            sqlite_where=text("final IS 0 AND given_up_at IS NULL"),
            postgresql_where=text("final IS false AND given_up_at IS NULL"),
        ),
    )


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    # "stored", or "rejected" with `error` saying why.
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(200))
    acked_ids: Mapped[str] = mapped_column(Text, default="")
    state_count: Mapped[int] = mapped_column(Integer, default=0)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id_sms: Mapped[str] = mapped_column(String(ID_SMS_LENGTH))
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    # The provider's time string as received ("" for `send`); part of the key.
    time_raw: Mapped[str] = mapped_column(String(TIME_RAW_LENGTH))
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    num_parts: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The document it came in (None for polls). A plain reference, not a
    # foreign key: documents are purged after the retention period, states
    # are kept for good.
    document_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # Also serves every lookup by id_sms (its leading column).
        UniqueConstraint("id_sms", "status", "time_raw", name="uq_events_state"),
    )


class InstanceSetting(Base):
    __tablename__ = "instance_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
