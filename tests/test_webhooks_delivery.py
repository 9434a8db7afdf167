"""Deliveries from the service to a real local receiver: order, completeness, signatures,
filters, retries, 410, timeouts, rotation, replay. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from app.config import Settings
from tests.api_helpers import ADMIN, push
from tests.conftest import LiveServer
from tests.webhook_helpers import Receiver, wait_until, webhook_settings

WEBHOOKS = "/api/v1/admin/webhooks"


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return webhook_settings(settings)


@pytest.fixture
def live(hook_settings: Settings) -> Iterator[httpx.Client]:
    with LiveServer(hook_settings) as server, httpx.Client(base_url=server.url) as http:
        yield http


def subscribe(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post(WEBHOOKS, json={"url": url, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def feed(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/api/v1/changes", params={"limit": 1000}, headers=ADMIN)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def states(count: int, status: str = "deliver", start: int = 1000) -> list[tuple[str, str, str]]:
    return [(str(start + i), status, "2026-11-25 10:00:00") for i in range(count)]


def test_every_change_arrives_in_order_signed(live: httpx.Client) -> None:
    with Receiver() as receiver:
        created = subscribe(live, receiver.url, description="crm")
        assert created["secret"].startswith("whsec_")
        for chunk in range(4):  # 4 documents of 3: batches (5) cross document borders
            push(live, *states(3, start=1000 + 3 * chunk))
        items = feed(live)
        assert len(items) == 12
        wait_until(lambda: set(receiver.received_cursors()) >= {i["cursor"] for i in items})
    received = receiver.received_cursors()
    # Feed order, no gap (a batch may arrive twice, never out of order or skipped).
    deduplicated = list(dict.fromkeys(received))
    assert deduplicated == [item["cursor"] for item in items]
    for delivery in receiver.acknowledged():
        delivery.verify(created["secret"])
        payload = delivery.payload
        assert payload["type"] == "message.status"
        assert payload["data"]["cursor"] == delivery.changes[-1]["cursor"]
        assert delivery.headers["content-type"] == "application/json"
    # Each change has exactly the fields of the feed's items, with the same values.
    by_cursor = {item["cursor"]: item for item in items}
    for delivery in receiver.acknowledged():
        for change in delivery.changes:
            assert change == by_cursor[change["cursor"]]
    shown = live.get(f"{WEBHOOKS}/{created['id']}", headers=ADMIN).json()
    assert "secret" not in shown
    assert shown["cursor"] == items[-1]["cursor"]
    assert shown["lag_events"] == 0
    assert shown["last_outcome"] == "delivered"


def test_a_tampered_body_does_not_verify(live: httpx.Client) -> None:
    with Receiver() as receiver:
        created = subscribe(live, receiver.url)
        push(live, *states(1))
        wait_until(lambda: bool(receiver.acknowledged()))
    delivery = receiver.acknowledged()[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(created["secret"]).verify(delivery.body.replace(b"deliver", b"expired"), delivery.headers)


def test_filters_hold(live: httpx.Client) -> None:
    mixed = [
        ("2001", "send", ""),
        ("2001", "deliver", "2026-11-25 10:00:01"),
        ("2002", "not_deliver", "2026-11-25 10:00:02"),
        ("2003", "partly_deliver", "2026-11-25 10:00:03"),
        ("2004", "deliver", "2026-11-25 10:00:04"),
    ]
    with Receiver() as only_deliver, Receiver() as finals, Receiver() as everything:
        subscribe(live, only_deliver.url, statuses=["deliver"])
        subscribe(live, finals.url, final_only=True)
        subscribe(live, everything.url)
        push(live, *mixed)
        push(live, ("2005", "send", ""))  # the last change passes no filter but the third
        wait_until(lambda: len(everything.received_cursors()) >= 6)
        wait_until(lambda: len(only_deliver.received_cursors()) >= 2)
        wait_until(lambda: len(finals.received_cursors()) >= 4)
        ids = live.get(WEBHOOKS, headers=ADMIN).json()
        # Skipped changes move the cursor too: every subscription catches up to the head.
        wait_until(lambda: all(s["lag_events"] == 0 for s in live.get(WEBHOOKS, headers=ADMIN).json()))
    def statuses(receiver: Receiver) -> list[str]:
        return [c["status"] for d in receiver.acknowledged() for c in d.changes]

    assert set(statuses(only_deliver)) == {"deliver"}
    assert set(statuses(finals)) == {"deliver", "not_deliver", "partly_deliver"}
    assert len(dict.fromkeys(everything.received_cursors())) == 6
    assert len(ids) == 3
