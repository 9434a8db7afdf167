"""The self-healing story on one machine: silence, then drift (autofixed), then a wrong zone.

The simulator plays the provider and pushes to our real server; one poller
with its self-healing checks runs pass after pass, on the real clock, with
windows of seconds instead of minutes. (Reconciliation then finds the
messages nobody tracked: that part is tested with reconciliation.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from app import heartbeats
from app.config import Settings
from app.models import Message
from app.poller import PassResult, Poller
from app.provider import TargetSMSClient
from app.selfheal import SelfHeal
from app.simulator import SimulatorServer, SimulatorState
from app.tracking import Sent, track
from tests.conftest import CALLBACK_PATH, LiveServer
from tests.selfheal_helpers import gauge
from tests.sim_helpers import LOGIN, PASSWORD, run_cli, with_provider

SILENCE_SECONDS = 3.0


def message(engine: Engine, id_sms: str) -> tuple[str | None, str | None, datetime | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(Message.status, Message.source, Message.status_at).where(
                Message.id_sms == id_sms
            )
        ).one()
    return row.status, row.source, row.status_at


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_silence_then_drift_then_a_wrong_zone(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    state = SimulatorState(LOGIN, PASSWORD, retry_delay=0.05)
    with SimulatorServer(state) as sim, LiveServer(settings) as live:
        healing = with_provider(
            settings,
            sim,
            public_url=live.url,
            callback_silence_minutes=SILENCE_SECONDS / 60,
            poll_after_seconds_when_silent=0,
            callback_url_check_minutes=0.001,  # every pass
            callback_url_autofix=True,
            account_check_minutes=0.001,
        )
        ours = live.url + CALLBACK_PATH
        state.callback_url = ours

        def send(count: int) -> list[str]:
            ids = state.create(count)
            track(engine, [Sent(i) for i in ids], datetime.now(UTC))
            return ids

        def deliver(*ids: str) -> None:
            for id_sms in ids:
                state.advance(id_sms, "deliver")
            assert state.wait_settled(15)

        async def story() -> None:
            client = TargetSMSClient(sim.api_url, LOGIN, SecretStr(PASSWORD), timeout=5.0)
            async with client:
                poller = Poller(healing, engine, client, hooks=SelfHeal(healing, engine, client))

                async def one_pass() -> PassResult:
                    return await poller.run(once=True)

                # 0. All well: a callback arrives, the checks pass.
                first, second, third = send(3)
                deliver(first)
                assert message(engine, first)[:2] == ("deliver", "callback")
                assert (await one_pass()).error is None
                assert gauge(engine, "targetsms_callbacks_silent") == 0
                assert gauge(engine, "targetsms_callback_url_matches") == 1

                # 1. The provider goes silent; statuses keep coming by polling.
                httpx.post(sim.url + "/sim/account", json={"silent": True})
                deliver(second, third)
                assert [s.id_sms for s in state.lost] == [second, third]
                time.sleep(SILENCE_SECONDS + 0.5)
                await one_pass()
                assert gauge(engine, "targetsms_callbacks_silent") == 1
                assert message(engine, second)[:2] == ("deliver", "poll")
                assert message(engine, third)[:2] == ("deliver", "poll")
                await one_pass()  # still silent: no second line
                assert len(lines(caplog, "callbacks are silent")) == 1

                # ... and speaks again.
                httpx.post(sim.url + "/sim/account", json={"silent": False})
                (fourth,) = send(1)
                deliver(fourth)
                await one_pass()
                assert gauge(engine, "targetsms_callbacks_silent") == 0
                assert len(lines(caplog, "callbacks are no longer silent")) == 1

                # 2. Someone registers another URL; the next check puts ours back.
                httpx.post(sim.url + "/sim/callback-url", json={"url": "https://else.example/x"})
                await one_pass()
                assert state.callback_url == ours
                assert len(lines(caplog, "callback URL drift")) == 1
                assert len(lines(caplog, "callback URL repaired")) == 1
                (fifth,) = send(1)
                deliver(fifth)
                assert message(engine, fifth)[:2] == ("deliver", "callback")

                # 3. The account is moved to Novosibirsk (UTC+7, Moscow + 4 h).
                httpx.post(sim.url + "/sim/account", json={"zone": "Asia/Novosibirsk"})
                (sixth,) = send(1)
                deliver(sixth)
                await one_pass()
                loud = lines(caplog, "TARGETSMS_TIMEZONE IS WRONG")
                assert len(loud) == 1 and "TARGETSMS_TIMEZONE=Asia/Novosibirsk" in loud[0]
                # Read as Moscow time, the status time lands four hours in the future.
                status_at = message(engine, sixth)[2]
                assert status_at is not None
                assert abs(status_at - datetime.now(UTC) - timedelta(hours=4)) < timedelta(
                    minutes=1
                )

        asyncio.run(story())
        # `doctor` tells the same: the zone FAILs.
        done = run_cli(healing, "doctor")
        assert done.returncode == 1
        assert "FAIL account zone" in done.stdout and "Asia/Novosibirsk" in done.stdout

    with engine.connect() as conn:
        account = heartbeats.read(conn, heartbeats.ACCOUNT_LAST_CHECK)
        url = heartbeats.read(conn, heartbeats.CALLBACK_URL_LAST_CHECK)
    assert account is not None and account["suggested_zone"] == "Asia/Novosibirsk"
    assert url is not None and url["matches"] is True
    assert PASSWORD not in caplog.text + done.stdout + done.stderr
    # The token never reaches a line of ours (the simulator's push client, the
    # provider's side, logs its own requests through httpx).
    ours = [r for r in caplog.records if r.name.startswith("app.") and r.name != "app.simulator"]
    assert ours and not [r for r in ours if CALLBACK_PATH in r.getMessage()]
