"""`callback-url set` and `poll --metrics-port`: the CLI processes against the simulator."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.simulator import SimulatorServer, SimulatorState
from app.tracking import Sent, track
from tests.conftest import CALLBACK_PATH, free_port
from tests.deploy_helpers import metric
from tests.sim_helpers import CLI, LOGIN, PASSWORD, environment, run_cli, with_provider

PUBLIC = "https://sms.example.org"
OURS = PUBLIC + CALLBACK_PATH
LOCAL = "http://127.0.0.1:8000" + CALLBACK_PATH


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


def report(stdout: str) -> dict[str, str]:
    """The `name: value` lines of the output."""
    lines = [line.split(":", 1) for line in stdout.splitlines() if not line.startswith(" ")]
    return {name.strip(): value.strip() for name, value in lines}


def test_a_forced_url_says_it_is_not_the_expected_one(
    settings: Settings, sim: SimulatorServer
) -> None:
    configured = with_provider(settings, sim, public_url=PUBLIC)
    done = run_cli(configured, "callback-url", "set", "--force", LOCAL)
    assert done.returncode == 0, done.stderr  # the provider confirmed what was asked
    shown = report(done.stdout)
    assert shown["registered"] == LOCAL
    assert shown["provider"] == f"{LOCAL} (read back after setting: confirmed)"
    assert shown["expected"] == f"{OURS} (PUBLIC_URL + the callback path)"
    assert "NOT the expected URL" in shown["result"]
    assert "confirmed" not in shown["result"]
    assert sim.state.callback_url == LOCAL
    # And the check agrees: not the expected URL, exit 1.
    assert run_cli(configured, "callback-url").returncode == 1


def test_the_expected_url_is_reported_as_matching(settings: Settings, sim: SimulatorServer) -> None:
    configured = with_provider(settings, sim, public_url=PUBLIC)
    done = run_cli(configured, "callback-url", "set")
    assert done.returncode == 0, done.stderr
    shown = report(done.stdout)
    assert shown["registered"] == OURS
    assert shown["provider"].startswith(OURS)
    assert shown["result"] == "the provider has the expected URL"
    assert run_cli(configured, "callback-url").returncode == 0


def test_without_public_url_there_is_nothing_to_compare_with(
    settings: Settings, sim: SimulatorServer
) -> None:
    configured = with_provider(settings, sim, public_url="")
    done = run_cli(configured, "callback-url", "set", "--force", LOCAL)
    assert done.returncode == 0, done.stderr
    shown = report(done.stdout)
    assert shown["registered"] == LOCAL
    assert shown["expected"] == "(PUBLIC_URL is not set)"
    assert "nothing to compare" in shown["result"]


# --- poll --metrics-port -----------------------------------------------------------------


def scrape_until(url: str, done: Callable[[str], bool], timeout: float = 60) -> str:
    """The first scrape for which `done` holds (the poller works in its own time)."""
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.TransportError:
            text = ""
        if text and done(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"never reached; last scrape:\n{text}")


def poll_process(settings: Settings, port: int) -> subprocess.Popen[str]:
    quick = settings.model_copy(update={"poll_interval_seconds": 0.2, "poll_after_seconds": 0})
    command = [*CLI, "poll", "--metrics-port", str(port)]
    return subprocess.Popen(command, env=environment(quick), stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    return stderr


def test_poll_serves_its_metrics_on_the_port(
    settings: Settings, engine: Engine, sim: SimulatorServer
) -> None:
    ids = sim.state.create(2)
    track(engine, [Sent(i) for i in ids], datetime.now(UTC))
    sim.state.advance(ids[0], "deliver")
    port = free_port()
    started = time.time()
    process = poll_process(with_provider(settings, sim), port)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        text = scrape_until(url, lambda t: metric(t, "targetsms_poll_passes_total") >= 2)
        last = metric(text, "targetsms_poll_last_success_timestamp_seconds")
        assert started <= last <= time.time()
        assert metric(text, "targetsms_provider_errors_total", kind="network") == 0
    finally:
        logged = stop(process)
    assert "poller metrics on http://127.0.0.1:" in logged
    assert PASSWORD not in text + logged


def test_a_failing_provider_shows_in_the_metrics_and_the_last_success_stays(
    settings: Settings, engine: Engine
) -> None:
    track(engine, [Sent("1234567")], datetime.now(UTC))
    nothing_there = f"http://127.0.0.1:{free_port()}/xml/"
    port = free_port()
    process = poll_process(with_provider(settings, nothing_there), port)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        text = scrape_until(url, lambda t: metric(t, "targetsms_poll_passes_total") >= 1)
        assert metric(text, "targetsms_provider_errors_total", kind="network") >= 2
        assert metric(text, "targetsms_poll_last_success_timestamp_seconds") == 0
    finally:
        stop(process)


def test_the_metrics_port_must_be_free(settings: Settings, sim: SimulatorServer) -> None:
    with socket_bound() as port:
        taken = run_cli(with_provider(settings, sim), "poll", "--once", "--metrics-port", str(port))
    assert taken.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in taken.stderr


def test_the_api_does_not_show_a_poller_that_never_ran(client: httpx.Client) -> None:
    # Every API replica would otherwise fire the poller's staleness alert.
    assert "targetsms_poll_last_success" not in client.get("/metrics").text


@contextmanager
def socket_bound() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
