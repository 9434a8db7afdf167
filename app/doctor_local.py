"""`doctor`'s checks on our own side: the database and what the roles recorded in it."""

from __future__ import annotations

from datetime import datetime, timedelta

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    func,
    select,
)

from app import heartbeats
from app.config import Settings
from app.findings import Finding, fail, ok, warn
from app.migrate import alembic_config
from app.models import Message, ReconciliationReport, WebhookSubscription
from app.poller import MAX_BACKOFF_SECONDS
from app.silence import callback_silence


def database(engine: Engine, settings: Settings) -> Finding:
    heads = set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:
        return fail(
            "database",
            f"unreachable ({type(exc).__name__})",
            "check DATABASE_URL and that the database server is up",
        )
    head = ", ".join(sorted(heads))
    if current != heads:
        at = ", ".join(sorted(current)) or "none (empty)"
        return fail(
            "database",
            f"reachable, but at revision {at}, not {head}",
            "run `targetsms-receiver migrate`",
        )
    return ok("database", f"reachable and migrated (revision {head})")


def last_callback(conn: Connection, settings: Settings, now: datetime) -> Finding:
    silence = callback_silence(conn, settings, now)
    last = silence.last_callback_at
    age = f"{(now - last).total_seconds() / 60:.0f} min ago" if last else "none kept"
    if silence.silent:
        return fail(
            "last callback",
            f"{age}, while {silence.waiting} messages younger than a day wait for a final "
            f"status: callbacks are silent (over {settings.callback_silence_minutes:g} min)",
            "check the registered callback URL, the proxy and CALLBACK_ALLOWED_NETWORKS; "
            "the poller fills in meanwhile",
        )
    return ok("last callback", age)


def poller(conn: Connection, settings: Settings, now: datetime) -> Finding:
    not_final = Message.final.is_(False)
    backlog = conn.scalar(select(func.count()).where(not_final, Message.given_up_at.is_(None)))
    given_up = conn.scalar(select(func.count()).where(not_final, Message.given_up_at.isnot(None)))
    counts = f"backlog {backlog}, given up {given_up}"
    beat = heartbeats.read(conn, heartbeats.POLLER_LAST_PASS)
    if beat is None:
        return warn("poller", f"{counts}; no pass recorded", "run `targetsms-receiver poll`")
    at = _moment(beat.get("at"))
    # A healthy poller passes every POLL_INTERVAL_SECONDS, or backs off up to 10 min.
    stale = timedelta(seconds=max(3 * settings.poll_interval_seconds, 2 * MAX_BACKOFF_SECONDS))
    if at is None or now - at > stale:
        return fail(
            "poller",
            f"{counts}; last pass {beat.get('at')}, over {stale} ago",
            "is `targetsms-receiver poll` running? see its log",
        )
    if not beat.get("ok"):
        error = beat.get("error")
        return warn("poller", f"{counts}; the last pass ended early: {error}", "see its log")
    return ok("poller", f"{counts}; last pass {at:%Y-%m-%d %H:%M:%S} UTC")


def reconciliation(conn: Connection) -> Finding:
    """The newest finished report: a failed day is a warning (the next run retries it)."""
    last = conn.execute(
        select(ReconciliationReport)
        .where(ReconciliationReport.status != "running")
        .order_by(ReconciliationReport.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return warn(
            "reconciliation", "no reconciliation has run", "run `targetsms-receiver reconcile`"
        )
    if last.status == "failed" or last.error:
        return warn(
            "reconciliation",
            f"the last report (day {last.day}) has an error: {last.error}",
            "see the poller's log; `targetsms-receiver reconcile` retries the day",
        )
    return ok(
        "reconciliation",
        f"last report: day {last.day}, {last.added} added, {last.updated} updated, "
        f"{last.flagged} flagged",
    )


def webhooks(conn: Connection) -> Finding:
    """Stopped subscriptions (retries ran out) FAIL: nothing reaches them any more."""
    subs = WebhookSubscription
    total = conn.scalar(select(func.count()).select_from(subs)) or 0
    stopped = conn.scalar(
        select(func.count()).where(subs.enabled.is_(False), subs.disabled_reason == "failing")
    )
    retrying = conn.scalar(
        select(func.count()).where(subs.enabled.is_(True), subs.failing_since.isnot(None))
    )
    if stopped:
        return fail(
            "webhooks",
            f"{stopped} of {total} subscriptions stopped: their retries ran out",
            "fix the receiver, then `targetsms-receiver webhooks resume ID`",
        )
    if retrying:
        return warn(
            "webhooks",
            f"{retrying} of {total} subscriptions failing (being retried)",
            "see GET /api/v1/admin/webhooks/ID/attempts and the receivers' logs",
        )
    return ok("webhooks", f"{total} subscriptions, none failing")


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
