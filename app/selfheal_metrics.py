"""The self-healing gauges, read at scrape time from the records the poller leaves.

The checks run in the poller's process, but the gauges are served wherever
`/metrics` is scraped (every API replica), from the `instance_settings`
records (app/heartbeats.py): one home for the facts, no stale 0 from a process
that never ran a check, and the same value on every replica (aggregate with
`max`/`min`, not `sum`). A gauge is absent until its check has run once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from app import heartbeats

log = logging.getLogger(__name__)


class SelfHealCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.engine.connect() as conn:
                beat = heartbeats.read(conn, heartbeats.POLLER_LAST_PASS) or {}
                url = heartbeats.read(conn, heartbeats.CALLBACK_URL_LAST_CHECK) or {}
                account = heartbeats.read(conn, heartbeats.ACCOUNT_LAST_CHECK) or {}
        except Exception as exc:  # targetsms_database_up already says so
            log.warning("metrics: self-healing records unreadable: %s", type(exc).__name__)
            return
        yield from _poller(beat)
        yield from _flag(
            "targetsms_callback_url_matches",
            "1 if the provider's callback URL equals PUBLIC_URL + our path at the last check.",
            url.get("matches"),
        )
        yield from _account(account)


def _poller(beat: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    yield from _flag(
        "targetsms_callbacks_silent",
        "1 while no callback has come for CALLBACK_SILENCE_MINUTES and messages younger than "
        "a day wait for a final status (as of the poller's last pass).",
        beat.get("silent"),
    )
    at = _timestamp(beat.get("at"))
    if at is not None:
        yield GaugeMetricFamily(
            "targetsms_poller_last_pass_timestamp_seconds",
            "When the poller last finished a pass (Unix time).",
            value=at,
        )


def _account(account: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    offset = account.get("zone_offset_seconds")
    if isinstance(offset, int):
        yield GaugeMetricFamily(
            "targetsms_account_clock_offset_seconds",
            "The account's clock (time.php) minus now in TARGETSMS_TIMEZONE; whole hours mean "
            "the zone setting is wrong.",
            value=offset,
        )
    money = _decimal(account.get("balance"))
    if money is not None:
        yield GaugeMetricFamily(
            "targetsms_balance_money", "Money left on the provider account.", value=float(money)
        )
    sms = account.get("sms")
    if isinstance(sms, dict) and sms:
        family = GaugeMetricFamily(
            "targetsms_balance_sms",
            "Messages the money left buys, per direction (the provider's area name).",
            labels=["area"],
        )
        for area, count in sms.items():
            if isinstance(count, int):
                family.add_metric([str(area)], count)
        yield family


def _flag(name: str, documentation: str, value: object) -> Iterator[GaugeMetricFamily]:
    if isinstance(value, bool):
        yield GaugeMetricFamily(name, documentation, value=1 if value else 0)


def _timestamp(value: object) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(value) if isinstance(value, str) else None
    except InvalidOperation:
        return None
