"""The `reconcile` command over real HTTP, and the poller role's schedule; both databases."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.poller import Poller
from app.provider import TargetSMSClient
from app.simulator import SimulatorServer, SimulatorState
from tests.conftest import rows
from tests.reconcile_helpers import API_URL, DAY, Provider, sent
from tests.sim_helpers import LOGIN, PASSWORD, run_cli, with_provider


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


def test_the_command_reconciles_the_days_given(
    settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    ids = [i for at in ("10:00:00", "10:01:00", "17:00:00") for i in sent(sim.state, at)]
    sim.state.advance(ids[0], "deliver", f"{DAY} 10:00:05")
    sim.state.stats_limit = 2
    day = ["--since", str(DAY), "--until", str(DAY)]
    done = run_cli(with_provider(settings, sim), "reconcile", *day)
    assert done.returncode == 0, done.stderr
    assert f"{DAY}: 3 messages (3 parts, " in done.stdout
    assert "added 3, updated 0, flagged 0" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    assert sorted(rows(engine, "SELECT id_sms, source FROM messages")) == [
        (i, "reconcile") for i in ids
    ]


def test_the_command_defaults_to_yesterday_and_today(
    settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    sim.state.create(2)  # sent now, in the account's zone
    done = run_cli(with_provider(settings, sim), "reconcile")
    assert done.returncode == 0, done.stderr
    today = datetime.now(settings.zone).date()
    assert done.stdout.splitlines()[-1].startswith(f"{today}: 2 messages")
    assert len(rows(engine, "SELECT id FROM reconciliation_reports")) == 2


@pytest.mark.parametrize(
    ("args", "password", "code", "says"),
    [
        (["--since", "2026-11-21", "--until", "2026-11-20"], PASSWORD, 2, "--until must be"),
        (["--since", "yesterday"], PASSWORD, 2, "Invalid value"),
        ([], "wrong-password", 3, "refused our credentials"),
    ],
)
def test_command_failures_have_exit_codes(
    settings: Settings, sim: SimulatorServer, args: list[str], password: str, code: int, says: str
) -> None:
    done = run_cli(with_provider(settings, sim, targetsms_password=password), "reconcile", *args)
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert password not in done.stdout + done.stderr


def test_a_failed_day_exits_1(settings: Settings, engine: Engine) -> None:
    # Nothing listens there: every window fails, down to one minute.
    down = with_provider(settings, "http://127.0.0.1:9/xml/")
    done = run_cli(down, "reconcile", "--since", str(DAY), "--until", str(DAY), timeout=120)
    assert done.returncode == 1, done.stderr
    assert "FAILED: stats.php" in done.stdout
    assert rows(engine, "SELECT status FROM reconciliation_reports") == [("failed",)]


REPORTS = "SELECT id FROM reconciliation_reports"


def run_poller(settings: Settings, engine: Engine, transport: httpx.AsyncBaseTransport) -> int:
    """The poller role until two reports are closed (or 30 s); the passes it made."""

    async def main() -> int:
        stop = asyncio.Event()
        client = TargetSMSClient(
            API_URL, LOGIN, SecretStr(PASSWORD), timeout=5.0, retries=0, transport=transport
        )
        async with client:
            poller = Poller(settings, engine, client, stop=stop)
            running = asyncio.create_task(poller.run())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not running.done():
                await asyncio.sleep(0.05)
                closed = rows(
                    engine, "SELECT id FROM reconciliation_reports WHERE status != 'running'"
                )
                if len(closed) == 2:
                    break
            assert not running.done(), "the poller ended on its own"
            stop.set()
            await asyncio.wait_for(running, 10)
            assert poller.reconciling is not None
            await asyncio.wait_for(poller.reconciling, 10)
        return 0

    return asyncio.run(main())


def test_the_poller_role_reconciles_yesterday_and_today(settings: Settings, engine: Engine) -> None:
    state = SimulatorState(LOGIN, PASSWORD)
    ids = state.create(2)
    for id_sms in ids:
        state.lose(id_sms)
    role = settings.model_copy(update={"poll_interval_seconds": 0.05})
    run_poller(role, engine, Provider(state))
    found = rows(engine, "SELECT status, added FROM reconciliation_reports ORDER BY day")
    assert found == [("done", 0), ("done", 2)]
    assert sorted(rows(engine, "SELECT id_sms, status, source FROM messages")) == [
        (i, "send", "reconcile") for i in ids
    ]


def test_bad_answers_never_stop_the_poller(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def garbage(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("stats.php"):
            return httpx.Response(200, content=b"<response><stats")
        return None

    caplog.set_level(logging.INFO)
    run_poller(settings, engine, Provider(SimulatorState(LOGIN, PASSWORD), garbage))
    found = rows(engine, "SELECT status FROM reconciliation_reports")
    assert found == [("failed",), ("failed",)]
    assert any("poll pass:" in r.getMessage() for r in caplog.records)
    assert any("reconcile" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


def test_the_schedule_is_off_with_interval_zero(settings: Settings, engine: Engine) -> None:
    off = settings.model_copy(update={"reconcile_interval_minutes": 0})

    async def main() -> object:
        stop = asyncio.Event()
        client = TargetSMSClient(
            API_URL,
            LOGIN,
            SecretStr(PASSWORD),
            timeout=5.0,
            transport=Provider(SimulatorState(LOGIN, PASSWORD)),
        )
        async with client:
            poller = Poller(off, engine, client, stop=stop)
            running = asyncio.create_task(poller.run())
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.wait_for(running, 10)
            return poller.reconciling

    assert asyncio.run(main()) is None
    assert rows(engine, "SELECT id FROM reconciliation_reports") == []


def test_a_database_that_is_down_is_a_failed_day_not_a_traceback(
    settings: Settings, sim: SimulatorServer
) -> None:
    down = with_provider(settings, sim, database_url="postgresql://postgres@127.0.0.1:9/none")
    done = run_cli(down, "reconcile", "--since", str(DAY), "--until", str(DAY))
    assert done.returncode == 1, done.stderr
    assert (
        f"{DAY}: 0 messages" in done.stdout and "FAILED: database: OperationalError" in done.stdout
    )
    assert "Traceback" not in done.stderr
