"""Registering our push URL with the provider: the admin API and the CLI, against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Settings
from app.simulator import ServerThread, SimulatorServer, SimulatorState
from tests.conftest import CALLBACK_PATH, TEST_TOKEN, LiveServer
from tests.sim_helpers import ADMIN, LOGIN, PASSWORD, READ, run_cli, with_provider

PUBLIC = "https://sms.example.org/hooks"
OURS = PUBLIC + CALLBACK_PATH
URL = "/api/v1/admin/callback-url"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as server:
        yield server


@pytest.fixture
def admin(settings: Settings, sim: SimulatorServer) -> Iterator[httpx.Client]:
    configured = with_provider(settings, sim, public_url=PUBLIC)
    with LiveServer(configured) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        yield http


def test_get_shows_both_urls_and_whether_they_match(
    admin: httpx.Client, sim: SimulatorServer
) -> None:
    answer = admin.get(URL, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"provider_url": "", "expected_url": OURS, "matches": False}
    sim.state.callback_url = OURS
    assert admin.get(URL, headers=ADMIN).json()["matches"] is True


def test_put_sets_our_own_url_by_default_and_confirms(
    admin: httpx.Client, sim: SimulatorServer
) -> None:
    answer = admin.put(URL, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"provider_url": OURS, "expected_url": OURS, "matches": True}
    assert sim.state.callback_url == OURS


def test_put_refuses_urls_that_do_not_reach_us_unless_forced(
    admin: httpx.Client, sim: SimulatorServer
) -> None:
    refused = {
        "http://sms.example.org" + CALLBACK_PATH: "callback_url_not_https",
        "https://sms.example.org/callbacks/targetsms/wrong-token": "callback_url_wrong_path",
        "https://sms.example.org/other/" + TEST_TOKEN: "callback_url_wrong_path",
        "https://sms.example.org/a b": "callback_url_invalid",
    }
    for url, code in refused.items():
        answer = admin.put(URL, json={"url": url}, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]) == (422, code), url
        assert TEST_TOKEN not in answer.text
    assert sim.state.callback_url == ""
    local = "http://127.0.0.1:8000" + CALLBACK_PATH
    answer = admin.put(URL, json={"url": local, "force": True}, headers=ADMIN)
    assert answer.status_code == 200
    assert answer.json()["provider_url"] == local
    assert answer.json()["matches"] is False
    assert sim.state.callback_url == local


def test_admin_endpoints_need_an_admin_key(admin: httpx.Client, sim: SimulatorServer) -> None:
    for method in ("GET", "PUT"):
        assert admin.request(method, URL).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert admin.request(method, URL, headers=wrong).status_code == 401
        answer = admin.request(method, URL, headers=READ)
        assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")
    assert sim.state.callback_url == ""


def test_provider_errors_are_reported_without_secrets(
    settings: Settings, sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    unset = settings.model_copy(update={"targetsms_login": ""})
    with LiveServer(unset) as live:
        answer = httpx.get(live.url + URL, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]) == (503, "provider_not_configured")
    wrong = with_provider(settings, sim, targetsms_password=PASSWORD + "-wrong")
    with LiveServer(wrong) as live:
        answer = httpx.put(live.url + URL, json={"url": OURS}, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]) == (502, "provider_rejected")
        assert answer.json()["detail"] == "Неправильный логин или пароль"
    assert sim.state.callback_url == ""
    assert PASSWORD not in caplog.text
    assert TEST_TOKEN not in caplog.text


class Forgetful:
    """A provider that accepts a set and then reports another URL."""

    def __init__(self) -> None:
        self.server = ServerThread(
            Starlette(routes=[Route("/xml/{e}", self.answer, methods=["POST"])])
        )

    async def answer(self, request: Request) -> Response:
        body = '<?xml version="1.0" encoding="utf-8"?><response><get_state>https://old</get_state>'
        return Response(body + "</response>", media_type="text/xml")


def test_a_set_the_provider_does_not_confirm_is_an_error(settings: Settings) -> None:
    forgetful = Forgetful()
    with forgetful.server:
        configured = with_provider(settings, forgetful.server.url + "/xml/")
        with LiveServer(configured) as live:
            answer = httpx.put(live.url + URL, json={"url": OURS}, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]) == (502, "callback_url_not_confirmed")
        bad = run_cli(configured, "callback-url", "set", OURS)
        assert bad.returncode == 1
        assert "different URL" in bad.stderr


def test_cli_shows_and_sets_the_url(settings: Settings, sim: SimulatorServer) -> None:
    configured = with_provider(settings, sim, public_url=PUBLIC)
    shown = run_cli(configured, "callback-url")
    assert shown.returncode == 1, shown.stderr
    assert f"expected: {OURS}" in shown.stdout
    assert "provider: (none set)" in shown.stdout
    assert "match:    no" in shown.stdout
    done = run_cli(configured, "callback-url", "set")
    assert done.returncode == 0, done.stderr
    assert sim.state.callback_url == OURS
    assert "confirmed" in done.stdout
    again = run_cli(configured, "callback-url")
    assert again.returncode == 0
    assert "match:    yes" in again.stdout
    for output in (shown, done, again):
        assert PASSWORD not in output.stdout + output.stderr


def test_cli_refuses_a_foreign_url_unless_forced(settings: Settings, sim: SimulatorServer) -> None:
    configured = with_provider(settings, sim)
    local = "http://127.0.0.1:8000" + CALLBACK_PATH
    refused = run_cli(configured, "callback-url", "set", local)
    assert refused.returncode == 2
    assert "https" in refused.stderr
    assert sim.state.callback_url == ""
    forced = run_cli(configured, "callback-url", "set", "--force", local)
    assert forced.returncode == 0, forced.stderr
    assert sim.state.callback_url == local


def test_cli_without_credentials_or_with_wrong_ones(
    settings: Settings, sim: SimulatorServer
) -> None:
    unset = with_provider(settings, sim, targetsms_login="")
    missing = run_cli(unset, "callback-url")
    assert missing.returncode == 3
    assert "TARGETSMS_LOGIN" in missing.stderr
    wrong = with_provider(settings, sim, targetsms_password=PASSWORD + "-wrong")
    refused = run_cli(wrong, "callback-url")
    assert refused.returncode == 3
    assert "Неправильный логин или пароль" in refused.stderr
    assert PASSWORD not in refused.stdout + refused.stderr
