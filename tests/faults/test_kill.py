"""kill -9 under load: every acknowledged state survives, on SQLite and PostgreSQL.

A real `targetsms-receiver serve` process takes about 200 callbacks a second
(three new ids each) and is SIGKILLed at random moments and restarted, again
and again. Afterwards every id it ever acknowledged must be stored with the
state that was sent for it. The negative control runs a receiver that
acknowledges before it commits under the same harness, which must report
lost ids: proof that the harness can see a loss.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_db_engine
from tests.faults.harness import FULL, Ledger, ServerProcess, drive_load, fresh_ids, unstored

RATE = 200  # requests a second
KILL_CYCLES = 50 if FULL else 5
BROKEN_RECEIVER = [
    sys.executable,
    "-m",
    "uvicorn",
    "--factory",
    "tests.faults.ack_before_commit:create_broken_app",
    "--no-access-log",
    "--log-level",
    "warning",
]


async def load_with_kills(server: ServerProcess, cycles: int, rng: random.Random) -> Ledger:
    ledger, stop = Ledger(), asyncio.Event()
    load = asyncio.create_task(drive_load(server.url, RATE, stop, ledger, fresh_ids(), timeout=15))
    for _ in range(cycles):
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        server.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        await asyncio.to_thread(server.start)
    await asyncio.sleep(1.0)  # some acknowledged traffic after the last restart too
    stop.set()
    await load
    return ledger


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_state(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    with ServerProcess(tmp_path, {"DATABASE_URL": settings.database_url}) as server:
        ledger = asyncio.run(load_with_kills(server, KILL_CYCLES, random.Random(seed)))

    print(
        f"seed {seed}: {KILL_CYCLES} kills, {len(ledger.acked)} ids acknowledged, {ledger.answers}"
    )
    assert server.starts == KILL_CYCLES + 1
    assert ledger.answers[0] > 0, "no request was cut off: the kills missed the load"
    assert len(ledger.acked) >= 100 * KILL_CYCLES, ledger.answers  # the load got through
    assert set(ledger.answers) <= {0, 200}, ledger.answers
    assert not ledger.foreign_acks
    missing = unstored(engine, ledger)
    assert missing == [], f"seed {seed}: {len(missing)} acknowledged ids lost, e.g. {missing[:5]}"


@pytest.mark.slow
def test_the_harness_catches_a_receiver_that_acknowledges_before_commit(
    sqlite_template: Path, tmp_path: Path
) -> None:
    database = tmp_path / "broken.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    env = {"DATABASE_URL": url}
    with ServerProcess(tmp_path, env, command=BROKEN_RECEIVER) as server:
        ledger = asyncio.run(load_with_kills(server, 3, random.Random()))

    engine = create_db_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        missing = unstored(engine, ledger)
    finally:
        engine.dispose()
    print(f"ack-before-commit: {len(missing)} of {len(ledger.acked)} acknowledged ids lost")
    assert len(ledger.acked) > 300
    assert missing, "the harness did not notice acknowledged ids that were never stored"
