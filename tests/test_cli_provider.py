"""`callback-url set` and `poll --metrics-port`: the CLI processes against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.config import Settings
from app.simulator import SimulatorServer, SimulatorState
from tests.conftest import CALLBACK_PATH
from tests.sim_helpers import LOGIN, PASSWORD, run_cli, with_provider

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


def test_the_expected_url_is_reported_as_matching(
    settings: Settings, sim: SimulatorServer
) -> None:
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
