"""Proxy trust and the callback allowlist, on the real app under a real server."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from tests.conftest import CALLBACK_PATH, TEST_TOKEN, LiveServer, rows
from tests.deploy_helpers import metric

PUSH = b'<request><state id_sms="800001" time="2020-01-01 12:00:00">deliver</state></request>'
FORGED = "198.51.100.7"
PREVIOUS_USED = "targetsms_callback_previous_token_requests_total"


def post_from(url: str, source: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=30) as http:
        return http.post(CALLBACK_PATH, content=PUSH, headers=headers or {})


def configured(settings: Settings, **networks: str) -> Settings:
    parsed = {
        name: [ipaddress.ip_network(net) for net in value.split(",")]
        for name, value in networks.items()
    }
    return settings.model_copy(update=parsed)


def stored_addresses(engine: Engine) -> list[tuple[object, ...]]:
    return rows(engine, "SELECT remote_addr FROM documents ORDER BY id")


def test_by_default_no_proxy_is_trusted(settings: Settings, engine: Engine) -> None:
    # uvicorn on its own would trust 127.0.0.1 (FORWARDED_ALLOW_IPS); we do not.
    with LiveServer(settings) as live:
        assert post_from(live.url, "127.0.0.1", {"X-Forwarded-For": FORGED}).status_code == 200
    assert stored_addresses(engine) == [("127.0.0.1",)]


def test_forwarded_for_is_read_only_from_a_trusted_proxy(
    settings: Settings, engine: Engine
) -> None:
    with LiveServer(configured(settings, trusted_proxies="127.0.0.1/32")) as live:
        assert post_from(live.url, "127.0.0.1", {"X-Forwarded-For": FORGED}).status_code == 200
        assert post_from(live.url, "127.0.0.2", {"X-Forwarded-For": FORGED}).status_code == 200
    assert stored_addresses(engine) == [(FORGED,), ("127.0.0.2",)]


def test_a_client_outside_the_allowlist_gets_403_and_nothing_is_stored(
    settings: Settings, engine: Engine
) -> None:
    with LiveServer(configured(settings, callback_allowed_networks="127.0.0.1/32")) as live:
        refused = post_from(live.url, "127.0.0.2")
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/xml")
        assert "<error>forbidden</error>" in refused.text
        # The token is not even looked at: a wrong one gets 403 too.
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport) as http:
            wrong = http.post(f"{live.url}/callbacks/targetsms/wrong", content=PUSH)
        assert wrong.status_code == 403
        assert stored_addresses(engine) == []
        assert post_from(live.url, "127.0.0.1").status_code == 200
    assert stored_addresses(engine) == [("127.0.0.1",)]


def test_a_forged_allowed_address_from_an_untrusted_peer_gets_403(
    settings: Settings, engine: Engine
) -> None:
    app_settings = configured(
        settings, trusted_proxies="127.0.0.1/32", callback_allowed_networks="198.51.100.0/24"
    )
    with LiveServer(app_settings) as live:
        forged = {"X-Forwarded-For": FORGED}
        assert post_from(live.url, "127.0.0.2", forged).status_code == 403
        assert post_from(live.url, "127.0.0.1", forged).status_code == 200  # via the proxy
    assert stored_addresses(engine) == [(FORGED,)]


@pytest.mark.parametrize("token", [TEST_TOKEN, "the-previous-token-abcdefghijklmnopqrstuvwxyz"])
def test_the_previous_token_is_accepted_while_rotating(
    settings: Settings, engine: Engine, token: str
) -> None:
    previous = SecretStr("the-previous-token-abcdefghijklmnopqrstuvwxyz")
    rotating = settings.model_copy(update={"callback_token_previous": previous})
    with LiveServer(rotating) as live, httpx.Client(base_url=live.url) as http:
        before = metric(http.get("/metrics").text, PREVIOUS_USED)
        assert http.post(f"/callbacks/targetsms/{token}", content=PUSH).status_code == 200
        assert http.post("/callbacks/targetsms/another-token", content=PUSH).status_code == 404
        used = metric(http.get("/metrics").text, PREVIOUS_USED) - before
    assert used == (0 if token == TEST_TOKEN else 1)
    assert rows(engine, "SELECT count(*) FROM documents") == [(1,)]
