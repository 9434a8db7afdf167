"""PostgreSQL stopped under load, then started: nothing lost, nothing hangs, it recovers.

The service runs against a private PostgreSQL cluster (never the shared one)
with `WRITE_TIMEOUT_SECONDS=4`, under about 100 callbacks a second. The
cluster is stopped for a while and started again; the service is not
restarted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.db import create_db_engine
from app.migrate import upgrade
from tests import private_postgres
from tests.conftest import free_port, in_ci
from tests.faults.harness import FULL, Ledger, ServerProcess, drive_load, fresh_ids, unstored
from tests.private_postgres import PrivatePostgres

RATE = 100  # requests a second
OUTAGE_SECONDS = 10 if FULL else 5
LONGEST_REQUEST_SECONDS = 5
RECOVERY_SECONDS = 10
# `immediate` is a crash (commits in flight are cut off); `fast` a clean shutdown.
STOP_MODES = ["immediate", "fast"] if FULL else ["immediate"]
SERVICE_ENV = {"WRITE_TIMEOUT_SECONDS": "4", "DB_CONNECT_TIMEOUT_SECONDS": "2"}


async def load_through_outage(
    server: ServerProcess, postgres: PrivatePostgres, mode: str
) -> tuple[Ledger, dict[str, float]]:
    ledger, stop = Ledger(), asyncio.Event()
    load = asyncio.create_task(drive_load(server.url, RATE, stop, ledger, fresh_ids(), timeout=10))
    await asyncio.sleep(2)
    acked_before = len(ledger.acked)
    await asyncio.to_thread(postgres.stop, mode)
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(postgres.start)
    up_at = time.monotonic()
    while ledger.last_ack_at < up_at and time.monotonic() < up_at + RECOVERY_SECONDS + 5:
        await asyncio.sleep(0.05)
    recovered_after = ledger.last_ack_at - up_at
    await asyncio.sleep(2)  # and it goes on acknowledging
    stop.set()
    await load
    return ledger, {"acked_before": acked_before, "recovered_after": recovered_after}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("mode", STOP_MODES)
def test_postgres_outage_under_load_loses_nothing_and_recovers(tmp_path: Path, mode: str) -> None:
    if not private_postgres.available():
        if in_ci():
            pytest.fail("CI=true but initdb/runuser are missing: the outage test must run")
        pytest.skip("no PostgreSQL binaries to make a private cluster with")
    with PrivatePostgres(free_port()) as postgres:
        url = postgres.create_database("outage")
        upgrade(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
        with ServerProcess(tmp_path, {"DATABASE_URL": url, **SERVICE_ENV}) as server:
            ledger, phases = asyncio.run(load_through_outage(server, postgres, mode))
        engine = create_db_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
        try:
            missing = unstored(engine, ledger)
        finally:
            engine.dispose()

    print(
        f"outage {OUTAGE_SECONDS}s ({mode}): {ledger.answers},"
        f" longest {ledger.longest:.2f}s, {phases}"
    )
    assert phases["acked_before"] > 0
    assert ledger.answers[503] > 0, "the outage was never seen: did the database stop?"
    assert set(ledger.answers) <= {200, 503}, ledger.answers
    assert ledger.longest < LONGEST_REQUEST_SECONDS, f"a request took {ledger.longest:.1f}s"
    assert 0 <= phases["recovered_after"] < RECOVERY_SECONDS, phases
    assert not ledger.foreign_acks
    assert missing == [], f"{len(missing)} acknowledged ids lost, e.g. {missing[:5]}"
