"""Set-up shared by the self-healing and doctor tests: callbacks and messages at given times."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import Engine

from app.db import write_transaction
from app.ingest import Submission
from app.protocol import IncomingState
from app.selfheal_metrics import SelfHealCollector
from app.store import store_batch
from app.tracking import Sent, track


def sent_at(engine: Engine, at: datetime, *ids: str) -> None:
    """Messages tracked (first seen) at `at`, waiting for their first state."""
    track(engine, [Sent(i) for i in ids], at)


def callback_at(engine: Engine, at: datetime, id_sms: str, status: str = "deliver") -> None:
    """A callback document stored at `at`, the way the writer stores one."""
    state = IncomingState(id_sms, status, "2026-01-01 12:00:00", at)
    body = f'<request><state id_sms="{id_sms}">{status}</state></request>'.encode()
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state], "callback", at, body=body)], at)


def counter(name: str, **labels: str) -> float | None:
    """A value of this process's metrics (the poller's counters)."""
    return REGISTRY.get_sample_value(name, labels)


def gauge(engine: Engine, name: str, **labels: str) -> float | None:
    """A self-healing gauge as a scrape of /metrics would read it."""
    registry = CollectorRegistry()
    registry.register(SelfHealCollector(engine))
    return registry.get_sample_value(name, labels)
