"""Subscriptions: create, change, rewind, rotate, delete, and read with their delivery state.

Shared by the admin API and the CLI. URLs are checked (`targets.check`) by the
caller before they get here, since that check resolves names (async I/O).
Secrets leave this module only in `Created` and `rotate`'s answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, Table, delete, func, insert, select, update

from app import feed
from app.db import write_transaction
from app.models import Event, WebhookAttempt
from app.models import WebhookSubscription as Sub
from app.webhooks import signing

SUBSCRIPTIONS = cast(Table, Sub.__table__)

# Changing any of these changes which changes a batch holds: a new epoch.
FILTER_FIELDS = ("statuses", "final_only")


class NotFound(Exception):
    """No subscription has this id."""


class CursorAhead(Exception):
    """The replay point is beyond the newest change."""


@dataclass(frozen=True, slots=True)
class Created:
    view: dict[str, Any]
    secret: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create(
    engine: Engine,
    url: str,
    statuses: list[str] | None = None,
    final_only: bool = False,
    description: str = "",
) -> Created:
    """A new subscription, starting at the feed's head: only changes from now on."""
    now, secret = _utcnow(), signing.new_secret()
    with write_transaction(engine) as conn:
        row = {
            "url": url,
            "statuses": _statuses_json(statuses),
            "final_only": final_only,
            "description": description,
            "secret": secret,
            "enabled": True,
            "cursor": feed.head(conn),
            "epoch": 0,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        new_id = conn.execute(insert(Sub).values(**row).returning(Sub.id)).scalar_one()
    return Created(get(engine, new_id), secret)


def get(engine: Engine, subscription_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return _view(conn, _load(conn, subscription_id), _utcnow())


def list_all(engine: Engine) -> list[dict[str, Any]]:
    now = _utcnow()
    with engine.connect() as conn:
        subs = conn.execute(select(SUBSCRIPTIONS).order_by(Sub.id)).all()
        return [_view(conn, sub, now) for sub in subs]


def change(engine: Engine, subscription_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Apply the given fields (url, statuses, final_only, description, enabled)."""
    now = _utcnow()
    with write_transaction(engine) as conn:
        sub = _load(conn, subscription_id)
        values: dict[str, Any] = {"updated_at": now}
        for key in ("url", "final_only", "description"):
            if key in fields:
                values[key] = fields[key]
        if "statuses" in fields:
            values["statuses"] = _statuses_json(fields["statuses"])
        if any(key in fields for key in FILTER_FIELDS):
            values |= _rewound(sub, sub.cursor)
        if "enabled" in fields:
            values |= _enabled() if fields["enabled"] else _paused(sub)
        conn.execute(update(Sub).where(Sub.id == sub.id).values(**values))
    return get(engine, subscription_id)


def remove(engine: Engine, subscription_id: int) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            delete(WebhookAttempt).where(WebhookAttempt.subscription_id == subscription_id)
        )
        if not conn.execute(delete(Sub).where(Sub.id == subscription_id)).rowcount:
            raise NotFound


def rotate(engine: Engine, subscription_id: int, overlap_hours: float) -> Created:
    """A new secret; the old one still signs (too) for `overlap_hours`."""
    now, secret = _utcnow(), signing.new_secret()
    with write_transaction(engine) as conn:
        sub = _load(conn, subscription_id)
        values = {
            "secret": secret,
            "previous_secret": sub.secret if overlap_hours > 0 else None,
            "previous_secret_until": now + timedelta(hours=overlap_hours)
            if overlap_hours > 0
            else None,
            "updated_at": now,
        }
        conn.execute(update(Sub).where(Sub.id == sub.id).values(**values))
    return Created(get(engine, subscription_id), secret)


def replay(
    engine: Engine, subscription_id: int, *, after: int | None = None, since: datetime | None = None
) -> dict[str, Any]:
    """Rewind to feed position `after`, or to just before the first change received at
    or after `since`: everything after it is delivered again."""
    with write_transaction(engine) as conn:
        sub = _load(conn, subscription_id)
        head = feed.head(conn)
        if after is None:
            assert since is not None
            first = conn.scalar(select(func.min(Event.id)).where(Event.received_at >= since))
            after = first - 1 if first is not None else head
        if after > head:
            raise CursorAhead
        values = _rewound(sub, after) | {"updated_at": _utcnow()}
        conn.execute(update(Sub).where(Sub.id == sub.id).values(**values))
    return get(engine, subscription_id)


def attempts(engine: Engine, subscription_id: int, limit: int) -> list[dict[str, Any]]:
    """The newest attempts first."""
    query = (
        select(WebhookAttempt.__table__)
        .where(WebhookAttempt.subscription_id == subscription_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        _load(conn, subscription_id)
        return [_attempt_view(row) for row in conn.execute(query)]


def _load(conn: Connection, subscription_id: int) -> Row[Any]:
    sub = conn.execute(select(SUBSCRIPTIONS).where(Sub.id == subscription_id)).one_or_none()
    if sub is None:
        raise NotFound
    return sub


def _statuses_json(statuses: list[str] | None) -> str | None:
    return json.dumps(sorted(set(statuses))) if statuses is not None else None


def _rewound(sub: Row[Any], cursor: int) -> dict[str, Any]:
    # A new epoch: the batches from here are new messages (new webhook-ids).
    return {
        "cursor": cursor,
        "epoch": sub.epoch + 1,
        "inflight_last_id": None,
        "inflight_webhook_id": None,
        "attempts": 0,
        "next_attempt_at": None,
        "failing_since": None,
    }


def _enabled() -> dict[str, Any]:
    # Resumes from the cursor; a batch that was being retried is retried at once.
    return {
        "enabled": True,
        "disabled_reason": None,
        "next_attempt_at": None,
        "failing_since": None,
        "attempts": 0,
    }


def _paused(sub: Row[Any]) -> dict[str, Any]:
    return {"enabled": False, "disabled_reason": sub.disabled_reason or "paused"}


def _view(conn: Connection, sub: Row[Any], now: datetime) -> dict[str, Any]:
    lag_events, lag_seconds = feed.behind(conn, sub.cursor, now)
    return {
        "id": sub.id,
        "url": sub.url,
        "statuses": json.loads(sub.statuses) if sub.statuses is not None else None,
        "final_only": sub.final_only,
        "description": sub.description,
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "cursor": feed.cursor(sub.cursor),
        "lag_events": lag_events,
        "lag_seconds": round(lag_seconds, 3),
        "retrying_webhook_id": sub.inflight_webhook_id,
        "attempts": sub.attempts,
        "next_attempt_at": sub.next_attempt_at,
        "failing_since": sub.failing_since,
        "last_attempt_at": sub.last_attempt_at,
        "last_outcome": sub.last_outcome,
        "last_status_code": sub.last_status_code,
        "last_error": sub.last_error,
        "previous_secret_until": sub.previous_secret_until,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
    }


def _attempt_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "attempted_at": row.attempted_at,
        "webhook_id": row.webhook_id,
        "first_cursor": feed.cursor(row.first_event_id),
        "last_cursor": feed.cursor(row.last_event_id),
        "changes": row.changes,
        "outcome": row.outcome,
        "status_code": row.status_code,
        "latency_ms": row.latency_ms,
        "error": row.error,
        "response_excerpt": row.response_excerpt,
    }
