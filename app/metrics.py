"""Prometheus metrics, served at `/metrics` on the app port (never public).

Counters and the commit histogram live in the process that moves them. With
`--workers N` each worker is its own process: set `PROMETHEUS_MULTIPROC_DIR`
(an empty, writable directory; `serve` empties it at start) and every worker
writes its values there and `/metrics` adds them up, whichever worker answers.
The variable is read when `prometheus_client` is first imported, so it must be
in the environment before the process starts.

Two values come from the database at scrape time instead (the same for every
process and replica, so aggregate them with `max`, not `sum`): the pending
backlog and when the last callback arrived. If the database does not answer,
they are left out and `targetsms_database_up` is 0.

No label ever holds a token, a key or a message id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, text

from app.models import Document, Message
from app.selfheal_metrics import SelfHealCollector
from app.webhooks.metrics import WebhookCollector

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROCESS_DIRECTORY = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROCESS_DIRECTORY:
    # The one thing done at import: prometheus_client opens its file there as
    # soon as a metric below is made, whichever command imported this module.
    os.makedirs(MULTIPROCESS_DIRECTORY, exist_ok=True)
# A scrape must stay cheap however large the tables grow.
SCRAPE_STATEMENT_TIMEOUT_MS = 2000

CALLBACK_REQUESTS = Counter(
    "targetsms_callback_requests",
    "Requests to the callback endpoint, by the HTTP status answered.",
    ["code"],
)
CALLBACK_STATES = Counter(
    "targetsms_callback_states",
    "States received in callbacks, by outcome: stored (new), duplicate (stored before), "
    "conflict (a second, different final status: stored and flagged), rejected (no valid "
    "id or status: skipped, not acknowledged).",
    ["outcome"],
)
PREVIOUS_TOKEN = Counter(
    "targetsms_callback_previous_token_requests",
    "Callback requests that used CALLBACK_TOKEN_PREVIOUS (rotation: wait for this to stop).",
)
ACKED_IDS = Counter("targetsms_acked_ids", "Message ids acknowledged to the provider.")
PARSE_ERRORS = Counter(
    "targetsms_callback_parse_errors",
    "Callback documents refused as empty, malformed or hostile (answered 400).",
)
COMMIT_SECONDS = Histogram(
    "targetsms_db_commit_seconds",
    "Duration of one write transaction of the group-commit writer, lock wait included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POLL_PASSES = Counter("targetsms_poll_passes", "Passes of the status poller.")
PROVIDER_ERRORS = Counter(
    "targetsms_provider_errors",
    "Failed calls to the provider's XML API, by kind (e.g. network, http, error_document).",
    ["kind"],
)

# --- Self-healing (issue 12): the repairs counter lives in the poller's process; the
# self-healing gauges are read from the database at scrape time (app/selfheal_metrics.py).
CALLBACK_URL_REPAIRS = Counter(
    "targetsms_callback_url_repairs",
    "Times CALLBACK_URL_AUTOFIX registered the expected URL again, by outcome (ok, failed).",
    ["outcome"],
)
_STORED = CALLBACK_STATES.labels("stored")
_DUPLICATE = CALLBACK_STATES.labels("duplicate")
_CONFLICT = CALLBACK_STATES.labels("conflict")
_REJECTED = CALLBACK_STATES.labels("rejected")


def record_states(*, stored: int, duplicates: int, conflicts: int, acked: int) -> None:
    """Count one committed callback; `stored` includes the conflicts, as `Outcome` does."""
    # Each inc takes a lock (and in multiprocess mode writes a file): skip zeros.
    if stored > conflicts:
        _STORED.inc(stored - conflicts)
    if duplicates:
        _DUPLICATE.inc(duplicates)
    if conflicts:
        _CONFLICT.inc(conflicts)
    ACKED_IDS.inc(acked)


# issue 10 (core): the callback answer's counter child per code, looked up once
# (`labels()` builds a key and takes a lock on every call).
_ANSWERS: dict[int, Any] = {}


def record_answer(code: int) -> None:
    child = _ANSWERS.get(code)
    if child is None:
        child = _ANSWERS[code] = CALLBACK_REQUESTS.labels(code)
    child.inc()


def record_rejected_states(count: int) -> None:
    if count:
        _REJECTED.inc(count)


class DatabaseCollector(Collector):
    """Backlog and last-callback time, read from the database at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("targetsms_database_up", "1 if the scrape's queries succeeded.")
        try:
            pending, last_callback = self._read()
        except Exception as exc:
            log.warning("metrics: the database did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "targetsms_pending_messages",
            "Messages without a final status that the poller has not given up on.",
            value=pending,
        )
        if last_callback is not None:
            yield GaugeMetricFamily(
                "targetsms_last_callback_timestamp_seconds",
                "When the newest kept callback document arrived (Unix time); absent when "
                "none is kept. Time since: time() - this.",
                value=last_callback,
            )

    def _read(self) -> tuple[int, float | None]:
        pending_query = select(func.count()).where(
            Message.final.is_(False), Message.given_up_at.is_(None)
        )
        with self.engine.connect() as conn, conn.begin():
            if self.engine.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL statement_timeout = {SCRAPE_STATEMENT_TIMEOUT_MS}"))
            pending = conn.scalar(pending_query) or 0
            newest = conn.scalar(select(func.max(Document.received_at)))
        return pending, newest.timestamp() if newest is not None else None


def render(engine: Engine) -> bytes:
    """The exposition text: process metrics (all workers' in multiprocess mode) + database."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        processes = generate_latest(registry)
    else:
        processes = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(DatabaseCollector(engine))
    database.register(SelfHealCollector(engine))  # self-healing (issue 12)
    database.register(WebhookCollector(engine))  # outbound webhooks (issue 11)
    return processes + generate_latest(database)


def clear_multiprocess_directory() -> None:
    """Remove other processes' files from `PROMETHEUS_MULTIPROC_DIR` (stale ones add up).

    `serve` calls it before the workers start; this process's own files stay,
    since with one worker this process is the server.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    own = f"_{os.getpid()}.db"
    for name in os.listdir(directory):
        if name.endswith(".db") and not name.endswith(own):
            os.remove(os.path.join(directory, name))


# --- The poller's own endpoint (`poll --metrics-port`) ----------------------------------
#
# The poller is its own process, so its counters (POLL_PASSES, PROVIDER_ERRORS)
# are not in the API's /metrics: `poll --metrics-port N` serves this process's
# registry on N. The last-success gauge joins that registry only then, so that
# the API's /metrics never shows a poller that never succeeded (a 0 there
# would fire the staleness alert on every API replica).

POLL_LAST_SUCCESS = Gauge(
    "targetsms_poll_last_success_timestamp_seconds",
    "When the poller last finished a pass without a provider or database error (Unix time; "
    "0 until the first). Alert on time() - this > 3 * POLL_INTERVAL_SECONDS.",
    registry=None,
    multiprocess_mode="max",
)


def record_poll_success() -> None:
    POLL_LAST_SUCCESS.set_to_current_time()


def serve_poller_metrics(host: str, port: int) -> None:
    """Serve this process's metrics on host:port (a daemon thread, ends with the process)."""
    REGISTRY.register(POLL_LAST_SUCCESS)
    start_http_server(port, addr=host)
