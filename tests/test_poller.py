"""The poller against the simulator over real HTTP, on both databases."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from app.config import Settings
from app.db import create_db_engine
from app.models import Message
from app.poller import CredentialsRefused, PassResult, Poller, backoff_seconds
from app.provider import TargetSMSClient
from app.simulator import SimulatorServer, SimulatorState
from app.tracking import Sent, track
from tests.api_helpers import READ, doc
from tests.conftest import CALLBACK_PATH, LiveServer, rows
from tests.sim_helpers import CLI, LOGIN, PASSWORD, environment, run_cli, with_provider


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


@pytest.fixture
def poll_settings(settings: Settings, sim: SimulatorServer) -> Settings:
    return with_provider(settings, sim, poll_after_seconds=600, poll_batch_size=7)


def later(hours: float = 1.0) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def client_for(
    api_url: str, password: str = PASSWORD, transport: httpx.AsyncBaseTransport | None = None
) -> TargetSMSClient:
    return TargetSMSClient(
        api_url,
        LOGIN,
        SecretStr(password),
        timeout=5.0,
        retries=1,
        backoff_base=0.001,
        backoff_cap=0.005,
        transport=transport,
    )


def run_pass(
    settings: Settings,
    engine: Engine,
    *,
    at: datetime,
    password: str = PASSWORD,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PassResult:
    async def main() -> PassResult:
        async with client_for(settings.targetsms_api_url, password, transport) as client:
            poller = Poller(settings, engine, client, clock=lambda: at)
            return await poller.run_pass()

    return asyncio.run(main())


def tracked(engine: Engine, sim: SimulatorServer, count: int, **extra: object) -> list[str]:
    ids = sim.state.create(count, **extra)  # type: ignore[arg-type]
    track(engine, [Sent(i) for i in ids], datetime.now(UTC))
    return ids


def status_of(engine: Engine, id_sms: str) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(select(Message.status).where(Message.id_sms == id_sms))


def requested(sim: SimulatorServer) -> list[str]:
    return [i for request in sim.state.state_requests for i in request]


def test_a_pass_stores_the_states_with_parts_and_price(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    ids = tracked(engine, sim, 10, num_parts=3, price="2.5")
    for id_sms in ids[:4]:
        sim.state.advance(id_sms, "deliver", time="2020-01-01 12:57:46")
    result = run_pass(poll_settings, engine, at=later())
    assert (result.claimed, result.answered, result.stored, result.error) == (10, 10, 10, None)
    assert sorted(requested(sim)) == sorted(ids)
    assert max(len(r) for r in sim.state.state_requests) == 7  # POLL_BATCH_SIZE
    found = rows(engine, "SELECT id_sms, status, final, source, num_parts, price FROM messages")
    assert sorted(found) == sorted(
        [(i, "deliver", True, "poll", 3, "2.5") for i in ids[:4]]
        + [(i, "send", False, "poll", 3, "2.5") for i in ids[4:]]
    )
    with engine.connect() as conn:
        status_at = conn.scalar(select(Message.status_at).where(Message.id_sms == ids[0]))
    assert status_at == datetime(2020, 1, 1, 9, 57, 46, tzinfo=UTC)  # Moscow is UTC+3
    assert rows(engine, "SELECT DISTINCT source FROM events") == [("poll",)]


def test_only_due_messages_are_polled_and_each_once_per_delay(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    ids = tracked(engine, sim, 5)
    assert run_pass(poll_settings, engine, at=datetime.now(UTC)).claimed == 0  # too recent
    first = later()
    assert run_pass(poll_settings, engine, at=first).claimed == 5
    # Polled just now (and moved to `send`): not due again until POLL_AFTER_SECONDS.
    assert run_pass(poll_settings, engine, at=first + timedelta(seconds=599)).claimed == 0
    sim.state.advance(ids[0], "deliver")
    again = run_pass(poll_settings, engine, at=first + timedelta(seconds=601))
    assert (again.claimed, again.stored) == (5, 1)
    # Final now: never polled again.
    assert run_pass(poll_settings, engine, at=first + timedelta(hours=1)).claimed == 4
    assert Counter(requested(sim))[ids[0]] == 2


def test_old_messages_are_given_up_and_no_longer_polled(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    old = tracked(engine, sim, 3)
    result = run_pass(poll_settings, engine, at=later(hours=72.5))
    assert (result.given_up, result.claimed) == (3, 0)
    assert requested(sim) == []
    found = rows(engine, "SELECT given_up_at IS NOT NULL, final FROM messages")
    assert found == [(True, False)] * 3
    assert run_pass(poll_settings, engine, at=later(hours=80)).claimed == 0
    sim.state.advance(old[0], "deliver")
    assert run_pass(poll_settings, engine, at=later(hours=100)).claimed == 0


def test_wrong_credentials_stop_polling_and_never_reach_a_log(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    tracked(engine, sim, 3)
    wrong = PASSWORD + "-wrong"
    with pytest.raises(CredentialsRefused, match="Неправильный логин или пароль"):
        run_pass(poll_settings, engine, at=later(), password=wrong)
    assert rows(engine, "SELECT count(*) FROM events") == [(0,)]
    assert PASSWORD not in caplog.text
    assert "state.php" in caplog.text  # the client's own log lines were captured

    # Even with nothing due, the command checks the credentials first and stops.
    stopped = run_cli(with_provider(poll_settings, sim, targetsms_password=wrong), "poll")
    assert stopped.returncode == 3
    assert "refused our credentials" in stopped.stderr
    assert PASSWORD not in stopped.stdout + stopped.stderr


def test_provider_failures_end_the_pass_and_the_ids_come_back_later(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    tracked(engine, sim, 10)
    calls: list[bytes] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request.content)
        return httpx.Response(503, text="maintenance")

    result = run_pass(poll_settings, engine, at=later(), transport=httpx.MockTransport(down))
    assert result.claimed == 7  # the first batch, then the pass ended
    assert result.error is not None and "HTTP 503" in result.error
    assert len(calls) == 2  # the first attempt and one retry
    assert PASSWORD.encode() in calls[0]  # it was sent, so the log check below means something
    assert PASSWORD not in caplog.text
    # Claimed ids are not asked again before POLL_AFTER_SECONDS, then they are.
    assert run_pass(poll_settings, engine, at=later(1.1)).claimed == 3
    retried = run_pass(poll_settings, engine, at=later(1.5))
    assert (retried.claimed, retried.stored) == (10, 7)  # the 7 now get their first state


def test_backoff_doubles_is_capped_and_never_zero() -> None:
    for failures in range(1, 40):
        delay = backoff_seconds(failures, 60.0)
        assert 1.0 <= delay <= 600.0
    assert 30.0 <= backoff_seconds(1, 60.0) <= 60.0
    assert 60.0 <= backoff_seconds(2, 60.0) <= 120.0
    assert 300.0 <= backoff_seconds(30, 60.0) <= 600.0
    assert backoff_seconds(1, 0.01) == 1.0


@pytest.mark.postgres
def test_two_pollers_never_ask_for_the_same_id_in_one_pass(
    postgres_url: str, sim: SimulatorServer
) -> None:
    settings = with_provider(
        Settings(database_url=postgres_url, _env_file=None),  # type: ignore[call-arg]
        sim,
        poll_after_seconds=600,
        poll_batch_size=25,
    )
    engine = create_db_engine(settings)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE messages, events, documents RESTART IDENTITY")
        ids = tracked(engine, sim, 1500)
        at, start = later(), threading.Barrier(2)
        results: list[PassResult] = []

        def poller() -> None:
            start.wait()
            results.append(run_pass(settings, engine, at=at))

        threads = [threading.Thread(target=poller) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        engine.dispose()
    asked = requested(sim)
    assert sorted(asked) == sorted(ids)  # every id asked exactly once
    assert len(results) == 2
    assert all(r.claimed > 0 for r in results), [r.claimed for r in results]
    assert sum(r.claimed for r in results) == 1500


def test_the_poll_command_runs_once_or_until_sigterm(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    ids = tracked(engine, sim, 4)
    sim.state.advance(ids[0], "not_deliver")
    now = poll_settings.model_copy(update={"poll_after_seconds": 0})
    once = run_cli(now, "poll", "--once")
    assert once.returncode == 0, once.stderr
    assert "poll pass: 4 ids asked, 4 states answered, 4 new" in once.stderr
    assert status_of(engine, ids[0]) == "not_deliver"

    sim.state.advance(ids[1], "deliver")
    forever = now.model_copy(update={"poll_interval_seconds": 300.0})
    with subprocess.Popen(
        [*CLI, "poll"], env=environment(forever), stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "poll pass:" in line:
                break
        time.sleep(0.2)  # now waiting POLL_INTERVAL_SECONDS; a signal must cut it short
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
        assert time.monotonic() - started < 5
        lines.extend(process.stderr)
    assert any("SIGTERM: stopping" in line for line in lines), lines
    assert status_of(engine, ids[1]) == "deliver"
    assert not any(PASSWORD in line for line in lines)


def test_a_final_status_after_giving_up_clears_given_up_and_history_keeps_it(
    poll_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    (late,) = tracked(engine, sim, 1)
    assert run_pass(poll_settings, engine, at=later(hours=72.5)).given_up == 1
    with LiveServer(poll_settings) as live, httpx.Client(base_url=live.url) as http:
        answer = http.post(CALLBACK_PATH, content=doc((late, "deliver", "2026-11-20 12:00:00")))
        assert answer.status_code == 200 and f"<id_sms>{late}</id_sms>" in answer.text
        shown = http.get(f"/api/v1/messages/{late}", headers=READ).json()
    assert (shown["final"], shown["given_up"], shown["given_up_at"]) == (True, False, None)
    found = rows(engine, "SELECT given_up_at IS NULL, last_given_up_at IS NOT NULL FROM messages")
    assert found == [(True, True)]
