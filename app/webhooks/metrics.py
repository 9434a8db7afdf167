"""Webhook metrics: attempts and stops counted where they happen, lag read at scrape time.

Labels hold an outcome, a reason or a subscription id: never a URL (it may
carry a token) and never a secret. The lag gauges come from the database, so
they are the same whichever process or replica is scraped (aggregate with
`max`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from app import feed
from app.models import WebhookSubscription as Sub

log = logging.getLogger(__name__)

ATTEMPTS = Counter(
    "targetsms_webhook_attempts",
    "Webhook POSTs by outcome: delivered (2xx), failed (other answer, timeout, network), "
    "gone (410: subscription disabled), refused (target not allowed: nothing sent).",
    ["outcome"],
)
DELIVERED_CHANGES = Counter(
    "targetsms_webhook_delivered_changes", "Changes acknowledged (2xx) by webhook receivers."
)
STOPPED = Counter(
    "targetsms_webhook_stopped",
    "Subscriptions stopped by delivery: gone (410) or failing (retries ran out).",
    ["reason"],
)


def record_attempt(outcome: str, changes: int) -> None:
    ATTEMPTS.labels(outcome).inc()
    if outcome == "delivered":
        DELIVERED_CHANGES.inc(changes)


class WebhookCollector(Collector):
    """Per-subscription lag and the count of failing subscriptions, from the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            lags, failing = self._read()
        except Exception as exc:  # the database is down: targetsms_database_up says so
            log.warning("metrics: webhook lag not read: %s", type(exc).__name__)
            return
        events = GaugeMetricFamily(
            "targetsms_webhook_lag_events",
            "Change-feed positions after the subscription's cursor (capped at 1,000,000).",
            labels=["subscription"],
        )
        seconds = GaugeMetricFamily(
            "targetsms_webhook_lag_seconds",
            "Age of the oldest change not yet delivered (0 when caught up).",
            labels=["subscription"],
        )
        for sub_id, behind, age in lags:
            events.add_metric([str(sub_id)], behind)
            seconds.add_metric([str(sub_id)], age)
        yield events
        yield seconds
        yield GaugeMetricFamily(
            "targetsms_webhook_failing_subscriptions",
            "Subscriptions stopped because their retries ran out (re-enable to resume).",
            value=failing,
        )

    def _read(self) -> tuple[list[tuple[int, int, float]], int]:
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            rows = conn.execute(select(Sub.id, Sub.cursor)).all()
            lags = [(sub_id, *feed.behind(conn, cursor, now)) for sub_id, cursor in rows]
            failing = conn.scalar(
                select(func.count()).where(Sub.enabled.is_(False), Sub.disabled_reason == "failing")
            )
        return lags, failing or 0
