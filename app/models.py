"""The tables.

- `messages`: one row per provider message id, with its current status.
- `events`: every distinct state ever received, once per (id_sms, status, time);
  `events.id` is the change feed's total order.
- `documents`: the raw callback bodies, for audit and replay (purged after the
  retention period).
- `instance_settings`: values the service generates for itself (the callback
  token when none is configured).
- `webhook_subscriptions`, `webhook_attempts`: outbound webhooks (app/webhooks/).
- `message_context`, `reconciliation_reports`: reconciliation (app/reconcile*.py).
- `event_buckets`, `event_bucket_counts`: the dashboard's stored counts of closed
  15-minute intervals of `events` (app/ui/bucket_store.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
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
    # issue 9 item 13 (core): when polling last gave up; a final status clears
    # `given_up_at`, this keeps that it once was given up.
    last_given_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

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


# --- Outbound webhooks (issue 11, app/webhooks/) ------------------------------------------


class WebhookSubscription(Base):
    """A URL, a filter, and a cursor into the change feed (the outbox)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    # A JSON list of statuses; None: every status.
    statuses: Mapped[str | None] = mapped_column(Text)
    final_only: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(String(200), default="")
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why it is off: "paused" (an admin), "gone" (410), "failing" (retries ran out).
    disabled_reason: Mapped[str | None] = mapped_column(String(16))
    # The last feed position (events.id) delivered or skipped by the filter.
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped by a replay or a filter change: part of the webhook-id, so a
    # replayed batch is a new message to consumers that deduplicate.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    # The batch being retried, frozen: (cursor, inflight_last_id] again, same id.
    inflight_last_id: Mapped[int | None] = mapped_column(BigInteger)
    inflight_webhook_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))
    # Exactly one deliverer at a time: whoever holds an unexpired lease.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """One POST (or refusal to send) of one batch; purged after a retention period."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    webhook_id: Mapped[str] = mapped_column(String(64))
    first_event_id: Mapped[int] = mapped_column(BigInteger)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    changes: Mapped[int] = mapped_column(Integer)
    # "delivered", "failed", "gone" (410) or "refused" (target not allowed, nothing sent).
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_attempts_subscription", "subscription_id", "id"),)


# --- Reconciliation against stats.php (issue 12) ------------------------------------
# `message_context`: what the provider's statistics say about a message besides
# its status (the status itself goes through the write path, into `messages`).
# `reconciliation_reports`: one row per day per run; a row still "running"
# with `lease_until` ahead is that day's lease (one reconciler per day).

CONTEXT_FIELD_LENGTH = 128
PHONE_LENGTH = 32
PRICE_LENGTH = 32
REPORT_ERROR_LENGTH = 500


class MessageContext(Base):
    __tablename__ = "message_context"

    id_sms: Mapped[str] = mapped_column(String(ID_SMS_LENGTH), primary_key=True)
    originator: Mapped[str | None] = mapped_column(String(CONTEXT_FIELD_LENGTH))
    name_delivery: Mapped[str | None] = mapped_column(String(CONTEXT_FIELD_LENGTH))
    operator: Mapped[str | None] = mapped_column(String(CONTEXT_FIELD_LENGTH))
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))  # masked by the provider
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    sent_time_raw: Mapped[str | None] = mapped_column(String(TIME_RAW_LENGTH))
    num_parts: Mapped[int] = mapped_column(Integer)  # the parts the statistics listed
    # The price of one part, and the exact sum over the parts, as decimal strings.
    price: Mapped[str | None] = mapped_column(String(PRICE_LENGTH))
    cost: Mapped[str | None] = mapped_column(String(PRICE_LENGTH))
    text: Mapped[str | None] = mapped_column(Text)  # only with RECONCILE_STORE_TEXT=true
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReconciliationReport(Base):
    __tablename__ = "reconciliation_reports"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)  # in the account's zone
    status: Mapped[str] = mapped_column(String(16))  # running, done, failed
    owner: Mapped[str] = mapped_column(String(64))  # host:pid of the reconciler
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    windows: Mapped[int] = mapped_column(Integer, default=0)  # stats.php answers used
    parts: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    provider_counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON: status -> messages
    our_counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON, before this run
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    flagged: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(REPORT_ERROR_LENGTH))

    __table_args__ = (Index("ix_reconciliation_reports_day_status", "day", "status"),)


# --- Dashboard (issue 13) ------------------------------------------------------------
# The overview's counts of `events` per closed 15-minute interval (app/ui/bucket_store.py):
# `event_buckets` lists every interval counted, empty ones too, and
# `event_bucket_counts` holds its non-zero counts per status, written with it.


class EventBucket(Base):
    __tablename__ = "event_buckets"

    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class EventBucketCount(Base):
    __tablename__ = "event_bucket_counts"

    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
