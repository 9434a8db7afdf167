"""Outbound safety: refused targets at creation (422 with a code) and at delivery time,
including a name that resolves to a refused address only when the POST is due."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.webhooks import subscriptions, targets
from app.webhooks.delivery import Deliverer
from tests.api_helpers import ADMIN, push, store
from tests.conftest import LiveServer
from tests.webhook_helpers import Receiver, wait_until, webhook_settings

WEBHOOKS = "/api/v1/admin/webhooks"


REFUSED = [
    ("http://127.0.0.1:9/hook", "webhook_target_refused"),  # loopback without opt-in
    ("http://localhost:9/hook", "webhook_target_refused"),  # a name resolving to it
    ("http://[::1]:9/hook", "webhook_target_refused"),
    ("http://[::ffff:127.0.0.1]:9/hook", "webhook_target_refused"),
    ("http://169.254.169.254/latest/meta-data", "webhook_target_refused"),  # metadata
    ("http://[fe80::1]/hook", "webhook_target_refused"),
    ("http://224.0.0.1/hook", "webhook_target_refused"),
    ("http://0.0.0.0/hook", "webhook_target_refused"),
    ("ftp://10.0.0.1/hook", "webhook_url_invalid"),
    ("http://user:pw@10.0.0.1/hook", "webhook_url_invalid"),
    ("not a url", "webhook_url_invalid"),
    ("http://no-such-host.invalid/hook", "webhook_host_unresolvable"),
]


def test_refused_targets_get_a_clear_422(settings: Settings) -> None:
    # Plain http allowed, and no network named: loopback and the rest stay refused.
    allowing_http = settings.model_copy(update={"webhook_allow_http": True})
    with LiveServer(allowing_http) as server, httpx.Client(base_url=server.url) as client:
        for url, code in REFUSED:
            response = client.post(WEBHOOKS, json={"url": url}, headers=ADMIN)
            assert response.status_code == 422, (url, response.text)
            assert response.json()["error"] == code, url
            assert "pw" not in response.text
        # A PATCH to a refused URL is refused the same way.
        created = client.post(WEBHOOKS, json={"url": "http://10.9.8.7/h"}, headers=ADMIN)
        path = f"{WEBHOOKS}/{created.json()['id']}"
        patched = client.patch(path, json={"url": "http://169.254.169.254/"}, headers=ADMIN)
        assert patched.status_code == 422
        assert client.get(path, headers=ADMIN).json()["url"] == "http://10.9.8.7/h"


def test_https_only_unless_allowed(settings: Settings) -> None:
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        plain = client.post(WEBHOOKS, json={"url": "http://10.1.2.3/hook"}, headers=ADMIN)
        assert plain.status_code == 422
        assert plain.json()["error"] == "webhook_url_not_https"
        # Private ranges are allowed: the consumers are the company's own systems.
        tls = client.post(WEBHOOKS, json={"url": "https://10.1.2.3/hook"}, headers=ADMIN)
        assert tls.status_code == 201, tls.text
        # A read key may not manage webhooks.
        read = client.get(WEBHOOKS, headers={"Authorization": "Bearer read-key-1"})
        assert read.status_code == 403


def test_allowed_networks_open_loopback_but_not_metadata(settings: Settings) -> None:
    opened = webhook_settings(settings)  # 127.0.0.0/8 named
    for address in ("127.0.0.1", "localhost", "169.254.169.254"):
        url = f"http://{address}:9/hook"
        if address == "169.254.169.254":
            with pytest.raises(targets.TargetRefused, match="link-local"):
                asyncio.run(targets.check(url, opened))
        else:
            assert asyncio.run(targets.check(url, opened)).address.startswith(("127.", "::1"))


def resolver_to(address: str) -> targets.Resolver:
    """A resolver of our own (the Deliverer's hook): every name is `address`."""

    async def resolve(_host: str, _port: int) -> list[str]:
        return [address]

    return resolve


def deliver_until(
    settings: Settings, engine: Engine, resolver: targets.Resolver, done: Callable[[], bool]
) -> None:
    async def main() -> None:
        deliverer = Deliverer(settings, engine, resolver=resolver)
        running = asyncio.create_task(deliverer.run())
        for _ in range(200):
            if done():
                break
            await asyncio.sleep(0.02)
        await deliverer.stop()
        await running

    asyncio.run(main())


def test_a_name_rebound_to_loopback_is_refused_at_delivery(
    settings: Settings, engine: Engine
) -> None:
    closed = webhook_settings(settings, webhook_allowed_networks=[])
    with Receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        url = f"http://hooks.example.test:{port}/hook"
        # At creation the name resolved to a private address: allowed.
        asyncio.run(targets.check(url, closed, resolver_to("10.20.30.40")))
        created = subscriptions.create(engine, url)
        store(engine, settings, [("555", "deliver", "2026-11-25 10:00:00")])
        # Now it resolves to loopback (DNS rebinding): refused, nothing sent.
        history: list[dict[str, object]] = []

        def refused() -> bool:
            history[:] = subscriptions.attempts(engine, created.view["id"], 10)
            return bool(history)

        deliver_until(closed, engine, resolver_to("127.0.0.1"), refused)
        assert receiver.deliveries == []
        assert history[0]["outcome"] == "refused"
        assert "127.0.0.1, a loopback address" in str(history[0]["error"])
        # With loopback allowed the same name is sent to the checked address, Host kept.
        opened = webhook_settings(settings, webhook_retry_schedule_seconds=[0.01])
        subscriptions.change(engine, created.view["id"], {"enabled": True})
        deliver_until(
            opened, engine, resolver_to("127.0.0.1"), lambda: bool(receiver.acknowledged())
        )
    assert receiver.acknowledged()[0].headers["host"] == f"hooks.example.test:{port}"


def test_redirects_are_not_followed(settings: Settings, engine: Engine) -> None:
    hook_settings = webhook_settings(settings)
    with Receiver(lambda n: (307, 0.0)) as receiver:
        created = subscriptions.create(engine, receiver.url)
        store(engine, settings, [("556", "deliver", "2026-11-25 10:00:00")])

        def failed() -> bool:
            return bool(subscriptions.attempts(engine, created.view["id"], 10))

        deliver_until(hook_settings, engine, targets.system_resolver, failed)
    found = subscriptions.attempts(engine, created.view["id"], 10)[-1]
    assert (found["outcome"], found["status_code"]) == ("failed", 307)


def test_the_secret_is_never_shown_again_nor_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook_settings = webhook_settings(settings)
    with (
        LiveServer(hook_settings) as server,
        httpx.Client(base_url=server.url) as client,
        Receiver(lambda n: (500, 0.0) if n == 0 else (204, 0.0)) as receiver,
    ):
        url = receiver.url + "?token=url-token-42"  # a subscriber's own token, in its URL
        created = client.post(WEBHOOKS, json={"url": url}, headers=ADMIN).json()
        secret = created["secret"]
        push(client, ("77", "deliver", "2026-11-25 10:00:00"))
        wait_until(lambda: bool(receiver.acknowledged()))
        seen = [
            client.get(WEBHOOKS, headers=ADMIN).text,
            client.get(f"{WEBHOOKS}/{created['id']}", headers=ADMIN).text,
            client.get(f"{WEBHOOKS}/{created['id']}/attempts", headers=ADMIN).text,
            client.get("/metrics").text,
            client.get("/openapi.json").text,
        ]
    assert receiver.acknowledged()
    key = secret.removeprefix("whsec_")
    for text in [*seen, caplog.text]:
        assert key not in text
    assert "url-token-42" not in caplog.text + seen[3]
