"""How long one poller pass takes to reconcile N pending ids against the simulator.

    .venv/bin/python bench/poll_reconcile.py --database sqlite --count 100000
    .venv/bin/python bench/poll_reconcile.py --database postgres --count 100000

N messages are tracked (status unknown, as if every callback was lost); the
simulator holds a final status for each. One pass of the real poller (claim,
state.php over loopback HTTP, store) then runs until nothing is due, and the
script checks that every message is final. PostgreSQL: a scratch database on
TEST_POSTGRES_URL's server, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import Engine, func, select

from app.callback_url import provider_client
from app.config import Settings
from app.db import create_db_engine
from app.migrate import upgrade
from app.models import Message
from app.poller import PassResult, Poller
from app.simulator import SimulatorServer, SimulatorState
from app.tracking import Sent, track

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def run(database_url: str, count: int, batch_size: int) -> None:
    upgrade(Settings(database_url=database_url, _env_file=None))  # type: ignore[call-arg]
    state = SimulatorState("bench", "bench")
    with SimulatorServer(state) as sim:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=database_url,
            targetsms_login="bench",
            targetsms_password="bench",  # noqa: S106
            targetsms_api_url=sim.api_url,
            poll_batch_size=batch_size,
        )
        ids = state.create(count, num_parts=2)
        for id_sms in ids:
            state.advance(id_sms, "deliver")
        engine = create_db_engine(settings)
        try:
            started = time.perf_counter()
            track(engine, [Sent(i) for i in ids], datetime.now(UTC))
            print(f"tracked {count} ids in {time.perf_counter() - started:.1f} s")
            seconds, result = asyncio.run(one_pass(settings, engine))
            with engine.connect() as conn:
                final = conn.scalar(select(func.count()).where(Message.final.is_(True)))
        finally:
            engine.dispose()
    print(
        f"pass: {result.claimed} ids asked in {len(state.state_requests)} state.php requests "
        f"of {batch_size}, {result.stored} states stored, {seconds:.1f} s "
        f"({result.claimed / seconds:,.0f} ids/s); final afterwards: {final}/{count}"
    )
    assert final == count, "not every message was reconciled"


async def one_pass(settings: Settings, engine: Engine) -> tuple[float, PassResult]:
    at = datetime.now(UTC) + timedelta(hours=1)  # everything is due
    async with provider_client(settings) as client:
        poller = Poller(settings, engine, client, clock=lambda: at)
        started = time.perf_counter()
        result = await poller.run_pass()
        return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--batch-size", type=int, default=Settings.model_fields["poll_batch_size"].default
    )
    args = parser.parse_args()
    if args.database == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            run(f"sqlite:///{directory}/bench.db", args.count, args.batch_size)
        return
    name = f"tsr_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        run(f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}", args.count, args.batch_size)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
