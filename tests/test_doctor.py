"""`targetsms-receiver doctor`: one test per FAIL it can produce, on both databases.

Every run goes through the real command (a subprocess) against the simulator,
and no output may hold the password or the callback token.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, insert, update

from app import heartbeats
from app.config import Settings
from app.doctor import stored_token
from app.doctor_local import reconciliation, webhooks
from app.doctor_remote import callback_url
from app.migrate import alembic_config, upgrade
from app.models import ReconciliationReport, WebhookSubscription
from app.simulator import SimulatorServer, SimulatorState
from app.tokens import callback_path
from tests.conftest import TEST_TOKEN, LiveServer, free_port, rows
from tests.selfheal_helpers import callback_at, sent_at
from tests.sim_helpers import LOGIN, PASSWORD, run_cli, with_provider

PUBLIC = "https://receiver.example"
# A FAIL about the provider or the network, not the database: SQLite is enough.
PROVIDER_SIDE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        server.state.callback_url = PUBLIC + callback_path(TEST_TOKEN)
        yield server


@pytest.fixture
def configured(settings: Settings, engine: Engine, sim: SimulatorServer) -> Settings:
    """The provider and PUBLIC_URL set, and a poller that has just passed."""
    beat = {"at": heartbeats.iso(datetime.now(UTC)), "ok": True, "asked": 0, "error": None}
    heartbeats.write(engine, heartbeats.POLLER_LAST_PASS, beat)
    return with_provider(settings, sim, public_url=PUBLIC)


@pytest.fixture
def healthy(configured: Settings, engine: Engine) -> Settings:
    """Everything in order, a recent callback too."""
    callback_at(engine, datetime.now(UTC) - timedelta(minutes=5), "1")
    return configured


def doctor(settings: Settings, *args: str) -> tuple[int, list[str]]:
    done: subprocess.CompletedProcess[str] = run_cli(settings, "doctor", *args)
    output = done.stdout + done.stderr
    assert PASSWORD not in output and TEST_TOKEN not in output
    assert "Traceback" not in output, output
    return done.returncode, done.stdout.splitlines()


def changed(settings: Settings, **values: object) -> Settings:
    return Settings(**(settings.model_dump() | values), _env_file=None)  # type: ignore[arg-type]


def line(lines: list[str], check: str) -> str:
    (found,) = [x for x in lines if x[5:].startswith(check + ":")]
    return found


def assert_fails(settings: Settings, check: str, *args: str) -> str:
    code, lines = doctor(settings, *args)
    assert code == 1, lines
    found = line(lines, check)
    assert found.startswith("FAIL "), lines
    return found


def test_all_in_order_exits_0(healthy: Settings) -> None:
    code, lines = doctor(healthy)
    assert code == 0, lines
    assert [x.split(":")[0] for x in lines[:-1]] == [
        "OK   database",
        "OK   last callback",
        "OK   poller",
        "WARN reconciliation",
        "OK   webhooks",
        "OK   public URL",
        "OK   provider credentials",
        "OK   callback URL",
        "OK   account zone",
        "OK   balance",
    ]
    assert line(lines, "callback URL").endswith(f"{PUBLIC}/callbacks/targetsms/<token>")
    assert lines[-1] == "10 checks: 0 failed, 1 warnings"


def test_database_unreachable(settings: Settings, tmp_path: Path) -> None:
    if settings.is_sqlite:
        url = f"sqlite:///{tmp_path}/missing/dir/x.db"
    else:
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    broken = settings.model_copy(update={"database_url": url})
    found = assert_fails(broken, "database")
    assert "unreachable (OperationalError)" in found and "DATABASE_URL" in found


def test_database_not_migrated(settings: Settings) -> None:
    command.downgrade(alembic_config(settings), "base")
    try:
        found = assert_fails(settings, "database")
    finally:
        upgrade(settings)
    assert "at revision none (empty)" in found and "targetsms-receiver migrate" in found


@PROVIDER_SIDE
def test_credentials_refused(healthy: Settings) -> None:
    wrong = changed(healthy, targetsms_password="not-" + PASSWORD)
    found = assert_fails(wrong, "provider credentials")
    assert "refused: Неправильный логин или пароль" in found


@PROVIDER_SIDE
def test_provider_unreachable(healthy: Settings) -> None:
    gone = f"http://127.0.0.1:{free_port()}/xml/"
    found = assert_fails(healthy.model_copy(update={"targetsms_api_url": gone}), "provider")
    assert "ConnectError" in found


@PROVIDER_SIDE
def test_callback_url_differs(healthy: Settings, sim: SimulatorServer) -> None:
    sim.state.callback_url = "https://old.example" + callback_path(TEST_TOKEN)
    found = assert_fails(healthy, "callback URL")
    assert "https://old.example/callbacks/targetsms/<token>" in found
    assert "callback-url set" in found


@PROVIDER_SIDE
def test_public_url_not_https(healthy: Settings) -> None:
    found = assert_fails(changed(healthy, public_url="http://x.example"), "public URL")
    assert "is not https" in found


@PROVIDER_SIDE
def test_public_url_not_reaching_us(healthy: Settings, sim: SimulatorServer) -> None:
    # Something answers there, but not our callback endpoint.
    elsewhere = healthy.model_copy(update={"public_url": sim.url})
    found = assert_fails(elsewhere, "public URL reach", "--reach")
    assert "answered HTTP 404, not our callback endpoint" in found


def test_reach_finds_our_endpoint_and_stores_nothing(healthy: Settings, engine: Engine) -> None:
    before = rows(engine, "SELECT count(*) FROM documents")
    with LiveServer(healthy) as live:
        code, lines = doctor(healthy.model_copy(update={"public_url": live.url}), "--reach")
    assert line(lines, "public URL reach").startswith("OK   ")
    assert line(lines, "public URL").startswith("FAIL ")  # http: our own test server
    assert code == 1
    assert rows(engine, "SELECT count(*) FROM documents") == before


@PROVIDER_SIDE
def test_account_zone_wrong(healthy: Settings, sim: SimulatorServer) -> None:
    sim.state.zone = "Asia/Vladivostok"  # UTC+10: seven hours ahead of Moscow
    found = assert_fails(healthy, "account zone")
    assert "+7.00 h from Europe/Moscow" in found
    assert "set TARGETSMS_TIMEZONE=Asia/Vladivostok" in found


@PROVIDER_SIDE
def test_balance_run_out(healthy: Settings, sim: SimulatorServer) -> None:
    sim.state.account.money = Decimal("0")
    found = assert_fails(healthy, "balance")
    assert "0 RUR (SMS left: Россия 0, Украина 0): the provider stops sending" in found


def test_callbacks_silent(configured: Settings, engine: Engine) -> None:
    sent_at(engine, datetime.now(UTC) - timedelta(minutes=50), "2", "3")
    callback_at(engine, datetime.now(UTC) - timedelta(minutes=40), "1")
    found = assert_fails(configured, "last callback")
    assert "40 min ago" in found
    assert "2 messages younger than a day wait" in found


def test_poller_not_passing(healthy: Settings, engine: Engine) -> None:
    old = datetime.now(UTC) - timedelta(hours=2)
    beat = {"at": heartbeats.iso(old), "ok": True, "asked": 3, "error": None}
    heartbeats.write(engine, heartbeats.POLLER_LAST_PASS, beat)
    found = assert_fails(healthy, "poller")
    assert "is `targetsms-receiver poll` running?" in found


# --- Checks read in-process --------------------------------------------------------


def test_without_a_token_the_url_is_not_compared_and_none_is_made(
    settings: Settings, engine: Engine
) -> None:
    tokenless = changed(settings, callback_token=None, public_url=PUBLIC)
    assert stored_token(engine, tokenless) is None
    found = callback_url("https://x.example/y", tokenless, None)
    assert (found.level.value, found.check) == ("WARN", "callback URL")
    assert rows(engine, "SELECT count(*) FROM instance_settings") == [(0,)]


@PROVIDER_SIDE
def test_the_last_reconciliation_and_failing_webhooks_are_reported(
    settings: Settings, engine: Engine
) -> None:
    with engine.connect() as conn:
        assert reconciliation(conn).detail == "no reconciliation has run"
        assert webhooks(conn).level.value == "OK"
    now = datetime.now(UTC)
    report = {"owner": "test", "started_at": now, "finished_at": now, "added": 0, "error": None}
    subscription = {
        "url": "https://x.example/",
        "secret": "whsec_x",
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        conn.execute(
            insert(ReconciliationReport),
            [
                report | {"day": date(2026, 11, 27), "status": "done", "added": 3},
                report | {"day": date(2026, 11, 28), "status": "failed", "error": "timeout"},
                report | {"day": date(2026, 11, 29), "status": "running"},
            ],
        )
        conn.execute(
            insert(WebhookSubscription),
            [
                subscription | {"failing_since": None},
                subscription | {"failing_since": now},
            ],
        )
    with engine.connect() as conn:
        last, hooks = reconciliation(conn), webhooks(conn)
    assert (last.level.value, last.detail) == (
        "WARN",
        "the last report (day 2026-11-28) has an error: timeout",
    )
    assert (hooks.level.value, hooks.detail) == (
        "WARN",
        "1 of 2 subscriptions failing (being retried)",
    )
    with engine.begin() as conn:
        conn.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.failing_since.isnot(None))
            .values(enabled=False, disabled_reason="failing")
        )
    with engine.connect() as conn:
        stopped = webhooks(conn)
    assert (stopped.level.value, stopped.detail) == (
        "FAIL",
        "1 of 2 subscriptions stopped: their retries ran out",
    )
