"""Real `targetsms-receiver deliver` processes: kill -9 mid-batch loses nothing, and
two processes on one PostgreSQL database never deliver one subscription at once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.feed import read_changes
from app.webhooks import subscriptions
from tests.api_helpers import store
from tests.deploy_helpers import VENV_BIN
from tests.webhook_helpers import Receiver, wait_until, webhook_environment, webhook_settings


@contextmanager
def deliver_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(log.parent),
        "LOG_LEVEL": "INFO",
        **webhook_environment(settings),
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["targetsms-receiver", "deliver"], env=env, stdout=out, stderr=out, cwd=log.parent
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def states(count: int, start: int) -> list[tuple[str, str, str]]:
    return [(str(start + i), "deliver", "2026-11-25 10:00:00") for i in range(count)]


def all_cursors(engine: Engine) -> list[str]:
    return [item["cursor"] for item in read_changes(engine, 0, 10_000)]


def assert_in_order_without_gaps(receiver: Receiver, expected: list[str]) -> None:
    for delivery in receiver.acknowledged():
        cursors = [change["cursor"] for change in delivery.changes]
        assert cursors == [c for c in expected if c in set(cursors)]  # each batch in feed order
    assert list(dict.fromkeys(receiver.received_cursors())) == expected


def test_kill_9_mid_batch_then_restart_skips_nothing(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    hook_settings = webhook_settings(settings, webhook_timeout_seconds=0.5)
    with Receiver(lambda n: (200, 0.15)) as receiver:
        subscriptions.create(engine, receiver.url)
        store(engine, settings, states(60, 1000))
        log = tmp_path / "deliver.log"
        with deliver_process(hook_settings, log) as first:
            wait_until(lambda: len(receiver.acknowledged()) >= 3, what="three batches")
            wait_until(lambda: receiver.in_flight == 1, what="a batch in flight")
            in_flight = receiver.deliveries[-1]
            first.send_signal(signal.SIGKILL)
            first.wait()
        killed_at = len(receiver.deliveries)
        assert killed_at < 12, "the kill came too late to be mid-stream"
        with deliver_process(hook_settings, log):
            expected = all_cursors(engine)
            wait_until(lambda: set(receiver.received_cursors()) >= set(expected), 20, "the rest")
    assert_in_order_without_gaps(receiver, expected)
    # The batch in flight at the kill was sent again (at least once, never skipped).
    resent = [d for d in receiver.deliveries[killed_at:] if d.changes == in_flight.changes]
    assert resent, log.read_text()


@pytest.mark.postgres
def test_two_processes_never_deliver_one_subscription_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    import psycopg

    from tests.conftest import TABLES

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    settings = webhook_settings(
        Settings(_env_file=None, database_url=postgres_url),  # type: ignore[call-arg]
        webhook_poll_interval_seconds=0.05,
    )
    from app.db import create_db_engine

    engine = create_db_engine(settings)
    try:
        # Every 3rd answer a 503: the lease is given up, and either process may take it.
        def flaky(n: int) -> tuple[int, float]:
            return (503 if n % 3 == 2 else 200), 0.03

        with Receiver(flaky) as one, Receiver(flaky) as two:
            subscriptions.create(engine, one.url)
            subscriptions.create(engine, two.url)
            with (
                deliver_process(settings, tmp_path / "a.log"),
                deliver_process(settings, tmp_path / "b.log"),
            ):
                # Waves: between them the leases are given up and both processes race.
                for wave in range(6):
                    store(engine, settings, states(12, 1000 + 100 * wave))
                    time.sleep(0.25)
                expected = all_cursors(engine)
                for receiver in (one, two):
                    wait_until(lambda r=receiver: set(r.received_cursors()) >= set(expected), 20)
        for receiver in (one, two):
            assert receiver.max_in_flight == 1
            assert_in_order_without_gaps(receiver, expected)
        # Both processes delivered (each logged failed POSTs of its own).
        for log in ("a.log", "b.log"):
            assert "failed (HTTP 503)" in (tmp_path / log).read_text(), log
    finally:
        engine.dispose()
