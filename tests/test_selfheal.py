"""The poller's self-healing checks against the simulator and httpx.MockTransport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine

from app import heartbeats, metrics
from app.config import Settings
from app.db import create_db_engine
from app.poller import PassResult, Poller
from app.selfheal import SelfHeal
from app.simulator import SimulatorServer, SimulatorState
from app.tokens import callback_path
from tests.conftest import TEST_TOKEN
from tests.selfheal_helpers import callback_at, counter, gauge, sent_at
from tests.sim_helpers import LOGIN, PASSWORD, with_provider
from tests.test_poller import client_for

PUBLIC = "https://receiver.example"
EXPECTED = PUBLIC + callback_path(TEST_TOKEN)
SHOWN = PUBLIC + "/callbacks/targetsms/<token>"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        server.state.callback_url = EXPECTED
        yield server


@pytest.fixture
def heal_settings(settings: Settings, sim: SimulatorServer) -> Settings:
    return with_provider(settings, sim, public_url=PUBLIC)


def passes(
    settings: Settings,
    engine: Engine,
    count: int = 1,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    transport: httpx.AsyncBaseTransport | None = None,
    heal: bool = True,
    between: Callable[[int], None] = lambda _: None,
) -> list[PassResult]:
    """`count` passes of one poller (with self-healing unless `heal` is False)."""

    async def main() -> list[PassResult]:
        async with client_for(settings.targetsms_api_url, transport=transport) as client:
            hooks = SelfHeal(settings, engine, client, clock=clock) if heal else None
            poller = Poller(settings, engine, client, clock=clock, hooks=hooks)
            results = []
            for number in range(count):
                between(number)
                results.append(await poller.run(once=True))
            return results

    return asyncio.run(main())


def record(engine: Engine, key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found = heartbeats.read(conn, key)
    assert found is not None, key
    return found


# --- Silence -------------------------------------------------------------------------


def test_while_silent_the_poller_polls_sooner(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    now = datetime.now(UTC)
    ids = sim.state.create(3)
    callback_at(engine, now - timedelta(hours=2), "1")
    sent_at(engine, now - timedelta(minutes=40), *ids)
    # Polled 5 minutes ago: not due again under POLL_AFTER_SECONDS (1800) ...
    assert passes(heal_settings, engine, clock=lambda: now - timedelta(minutes=5))[0].claimed == 3
    for id_sms in ids:
        sim.state.advance(id_sms, "deliver")
    assert passes(heal_settings, engine, heal=False, clock=lambda: now)[0].claimed == 0
    # ... but it is under POLL_AFTER_SECONDS_WHEN_SILENT (120), so statuses keep flowing.
    (result,) = passes(heal_settings, engine, clock=lambda: now)
    assert (result.claimed, result.stored) == (3, 3)
    assert gauge(engine, "targetsms_callbacks_silent") == 1


# --- Heartbeats ----------------------------------------------------------------------


def test_each_pass_leaves_a_heartbeat_and_the_checks_their_records(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    sent_at(engine, datetime.now(UTC) - timedelta(hours=1), *sim.state.create(2))
    passes(heal_settings, engine)
    beat = record(engine, heartbeats.POLLER_LAST_PASS)
    assert (beat["ok"], beat["asked"], beat["error"]) == (True, 2, None)
    assert datetime.now(UTC) - datetime.fromisoformat(beat["at"]) < timedelta(minutes=1)
    url = record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)
    assert {k: url[k] for k in ("provider_url", "expected_url", "matches", "error")} == {
        "provider_url": SHOWN,
        "expected_url": SHOWN,
        "matches": True,
        "error": None,
    }
    account = record(engine, heartbeats.ACCOUNT_LAST_CHECK)
    assert account["error"] is None and account["suggested_zone"] is None
    assert abs(account["zone_offset_seconds"]) <= 5
    assert account["balance"] == "9997.70"  # 10000 - 2 x 1.15


def test_checks_run_when_due_not_every_pass(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start = datetime.now(UTC)
    moments = iter([start, start + timedelta(minutes=30), start + timedelta(minutes=61)])
    current = [start]

    def clock() -> datetime:
        return current[0]

    def advance(number: int) -> None:
        current[0] = next(moments)
        sim.state.callback_url = f"https://elsewhere.example/{number}"

    passes(heal_settings, engine, 3, clock=clock, between=advance)
    drifts = [r.getMessage() for r in caplog.records if "callback URL drift" in r.getMessage()]
    assert len(drifts) == 2 and "elsewhere.example/0" in drifts[0]
    assert "elsewhere.example/2" in drifts[1]
    # The URL was checked at the first pass and the third (60 minutes apart), not the second.
    assert record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)["provider_url"] == (
        "https://elsewhere.example/2"
    )
    assert record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)["at"].startswith(
        heartbeats.iso(start + timedelta(minutes=61))[:16]
    )


def test_the_gauges_are_absent_until_checked_then_served_from_the_records(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    names = ("targetsms_callbacks_silent", "targetsms_callback_url_matches", "targetsms_balance")
    before = metrics.render(engine).decode()
    assert not [name for name in names if name in before]
    passes(heal_settings, engine)
    after = metrics.render(engine).decode()
    assert "targetsms_callbacks_silent 0.0" in after
    assert "targetsms_callback_url_matches 1.0" in after
    assert "targetsms_balance_money 10000.0" in after
    assert 'targetsms_balance_sms{area="Россия"} 8695.0' in after
    assert "targetsms_poller_last_pass_timestamp_seconds" in after
    assert "targetsms_account_clock_offset_seconds" in after


# --- Callback URL drift --------------------------------------------------------------


def test_drift_is_reported_with_the_token_redacted(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    other = "https://old.example" + callback_path(TEST_TOKEN)
    httpx.post(sim.url + "/sim/callback-url", json={"url": other})
    passes(heal_settings, engine)
    assert sim.state.callback_url == other  # no autofix: left alone
    assert gauge(engine, "targetsms_callback_url_matches") == 0
    check = record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)
    assert (check["provider_url"], check["matches"]) == (
        "https://old.example/callbacks/targetsms/<token>",
        False,
    )
    drift = [r.getMessage() for r in caplog.records if "callback URL drift" in r.getMessage()]
    assert len(drift) == 1 and "old.example/callbacks/targetsms/<token>" in drift[0]
    assert TEST_TOKEN not in caplog.text and PASSWORD not in caplog.text


def test_autofix_registers_the_expected_url_and_reads_it_back(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repairs = counter("targetsms_callback_url_repairs_total", outcome="ok") or 0
    httpx.post(sim.url + "/sim/callback-url", json={"url": ""})  # the provider lost it
    fixing = heal_settings.model_copy(update={"callback_url_autofix": True})
    passes(fixing, engine)
    assert sim.state.callback_url == EXPECTED
    assert gauge(engine, "targetsms_callback_url_matches") == 1
    assert counter("targetsms_callback_url_repairs_total", outcome="ok") == repairs + 1
    check = record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)
    assert (check["provider_url"], check["matches"], check["error"]) == (SHOWN, True, None)
    assert "callback URL repaired" in caplog.text
    assert TEST_TOKEN not in caplog.text


def test_a_repair_that_does_not_stick_is_recorded(heal_settings: Settings, engine: Engine) -> None:
    def provider(request: httpx.Request) -> httpx.Response:
        # Accepts the set, but keeps answering another URL.
        return respond(request, get_state="https://stuck.example/x")

    fixing = heal_settings.model_copy(update={"callback_url_autofix": True})
    failed = counter("targetsms_callback_url_repairs_total", outcome="failed") or 0
    passes(fixing, engine, transport=httpx.MockTransport(provider))
    check = record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)
    assert check["matches"] is False
    assert check["error"] == "repair failed: the provider reports a different URL after setting it"
    assert counter("targetsms_callback_url_repairs_total", outcome="failed") == failed + 1


# --- The account's zone and balance --------------------------------------------------


def test_a_wrong_zone_is_reported_loudly_with_the_right_one(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim.state.zone = "Asia/Novosibirsk"  # UTC+7, four hours ahead of Moscow
    passes(heal_settings, engine)
    account = record(engine, heartbeats.ACCOUNT_LAST_CHECK)
    assert account["suggested_zone"] == "Asia/Novosibirsk"
    assert abs(account["zone_offset_seconds"] - 4 * 3600) <= 5
    offset = gauge(engine, "targetsms_account_clock_offset_seconds")
    assert offset is not None and abs(offset - 4 * 3600) <= 5
    loud = [r for r in caplog.records if "TARGETSMS_TIMEZONE IS WRONG" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelname == "ERROR"
    assert "+04:00 h from now in Europe/Moscow" in loud[0].getMessage()
    assert "Set TARGETSMS_TIMEZONE=Asia/Novosibirsk" in loud[0].getMessage()


def test_balance_metrics_and_warnings(
    heal_settings: Settings, engine: Engine, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim.state.account.money = Decimal("20")
    warned = heal_settings.model_copy(update={"balance_warn_below": 50})
    passes(warned, engine)
    assert gauge(engine, "targetsms_balance_money") == 20
    assert gauge(engine, "targetsms_balance_sms", area="Россия") == 17
    assert gauge(engine, "targetsms_balance_sms", area="Украина") == 8
    assert "money is low: 20, below BALANCE_WARN_BELOW=50" in caplog.text
    sim.state.account.money = Decimal("0")
    passes(warned, engine)
    assert "money has run out" in caplog.text


# --- Bad provider answers: each a defined outcome, none stops the poller -------------

TIME = "<response><time>{}</time></response>"
MOSCOW = ZoneInfo("Europe/Moscow")


def respond(request: httpx.Request, **override: str) -> httpx.Response:
    """A well-behaved provider, except where `override` gives an endpoint's answer."""
    endpoint = request.url.path.rsplit("/", 1)[-1].removesuffix(".php")
    answers = {
        "get_state": f"<response><get_state>{EXPECTED}</get_state></response>",
        "state": "<response></response>",
        "time": TIME.format(f"{datetime.now(MOSCOW):%Y-%m-%d %H:%M:%S}"),
        "balance": '<response><money currency="RUR">100</money></response>',
    }
    if endpoint in override:
        value = override[endpoint]
        if value == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if not value.startswith("<"):
            value = f"<response><get_state>{value}</get_state></response>"
        return httpx.Response(200, content=value.encode())
    return httpx.Response(200, content=answers[endpoint].encode())


BAD = {
    "error document": (
        "<response><error>Неизвестная ошибка</error></response>",
        "Неизвестная ошибка",
    ),
    "malformed XML": ("<response><time>", "unreadable answer"),
    "wrong login": (
        "<response><error>Неправильный логин или пароль</error></response>",
        "Неправильный логин или пароль",
    ),
    "timeout": ("timeout", "ReadTimeout, after 2 attempts"),
}


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("endpoint", ["time", "balance"])
def test_bad_account_answers_are_recorded_and_polling_goes_on(
    heal_settings: Settings, engine: Engine, kind: str, endpoint: str
) -> None:
    answer, expected = BAD[kind]
    transport = httpx.MockTransport(lambda request: respond(request, **{endpoint: answer}))
    sent_at(engine, datetime.now(UTC) - timedelta(hours=1), "777")
    (result,) = passes(heal_settings, engine, transport=transport)
    assert (result.claimed, result.error) == (1, None)
    account = record(engine, heartbeats.ACCOUNT_LAST_CHECK)
    assert account["error"] is not None and expected in account["error"]
    assert f"{endpoint}.php" in account["error"] or kind in ("error document", "wrong login")
    assert record(engine, heartbeats.POLLER_LAST_PASS)["ok"] is True


@pytest.mark.parametrize("kind", ["error document", "malformed XML", "timeout"])
def test_bad_get_state_answers_are_recorded_and_polling_goes_on(
    heal_settings: Settings, engine: Engine, kind: str
) -> None:
    answer, expected = BAD[kind]
    transport = httpx.MockTransport(lambda request: respond(request, get_state=answer))
    sent_at(engine, datetime.now(UTC) - timedelta(hours=1), "778")
    (result,) = passes(heal_settings, engine, transport=transport)
    assert (result.claimed, result.error) == (1, None)
    check = record(engine, heartbeats.CALLBACK_URL_LAST_CHECK)
    assert check["matches"] is None and expected in check["error"]
    assert check["expected_url"] == SHOWN


def test_a_database_failure_in_a_check_does_not_stop_the_poller(
    heal_settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    broken = create_db_engine(
        heal_settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/none/x.db"})
    )
    transport = httpx.MockTransport(respond)
    (result,) = passes(heal_settings, broken, transport=transport)
    assert result.error is not None and result.error.startswith("database")
    assert "self-healing: the callback silence failed (OperationalError)" in caplog.text
    assert "self-healing: the heartbeat failed (OperationalError)" in caplog.text
