"""Deliveries from the service to a real local receiver: order, completeness, signatures,
filters, retries, 410, timeouts, rotation, replay. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from app.config import Settings
from tests.api_helpers import ADMIN, push
from tests.conftest import LiveServer
from tests.webhook_helpers import Receiver, wait_until, webhook_settings

WEBHOOKS = "/api/v1/admin/webhooks"


@contextmanager
def served(settings: Settings, **overrides: Any) -> Iterator[httpx.Client]:
    """The service, with webhook settings and `overrides`, and a client of it."""
    hook_settings = webhook_settings(settings, **overrides)
    with LiveServer(hook_settings) as server, httpx.Client(base_url=server.url) as http:
        yield http


@pytest.fixture
def live(settings: Settings) -> Iterator[httpx.Client]:
    with served(settings) as http:
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
        Webhook(created["secret"]).verify(
            delivery.body.replace(b"deliver", b"expired"), delivery.headers
        )


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
        wait_until(
            lambda: all(s["lag_events"] == 0 for s in live.get(WEBHOOKS, headers=ADMIN).json())
        )

    def statuses(receiver: Receiver) -> list[str]:
        return [c["status"] for d in receiver.acknowledged() for c in d.changes]

    assert set(statuses(only_deliver)) == {"deliver"}
    assert set(statuses(finals)) == {"deliver", "not_deliver", "partly_deliver"}
    assert len(dict.fromkeys(everything.received_cursors())) == 6
    assert len(ids) == 3


def attempts(client: httpx.Client, subscription_id: int) -> list[dict[str, Any]]:
    response = client.get(f"{WEBHOOKS}/{subscription_id}/attempts", headers=ADMIN)
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()
    return found


def shown(client: httpx.Client, subscription_id: int) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"{WEBHOOKS}/{subscription_id}", headers=ADMIN).json()
    return found


def test_a_503_is_retried_with_the_same_webhook_id(live: httpx.Client) -> None:
    with Receiver(lambda n: (503, 0.0) if n < 2 else (200, 0.0)) as receiver:
        created = subscribe(live, receiver.url)
        push(live, *states(2))
        wait_until(lambda: bool(receiver.acknowledged()))
        push(live, *states(1, start=3000))
        wait_until(lambda: len(receiver.acknowledged()) == 2)
    first, second, third, fourth = receiver.deliveries
    assert first.webhook_id == second.webhook_id == third.webhook_id != fourth.webhook_id
    assert first.body != third.body or first.headers["webhook-timestamp"]  # re-signed per attempt
    assert [c["cursor"] for c in first.changes] == [c["cursor"] for c in third.changes]
    third.verify(created["secret"])
    outcomes = [a["outcome"] for a in reversed(attempts(live, created["id"]))]
    assert outcomes == ["failed", "failed", "delivered", "delivered"]
    assert attempts(live, created["id"])[-1]["status_code"] == 503
    assert attempts(live, created["id"])[-1]["response_excerpt"] == "ok"
    assert shown(live, created["id"])["failing_since"] is None


def test_a_receiver_that_hangs_past_the_timeout_is_retried(settings: Settings) -> None:
    with (
        served(settings, webhook_timeout_seconds=0.5) as live,
        Receiver(lambda n: (200, 1.5) if n == 0 else (200, 0.0)) as receiver,
    ):
        created = subscribe(live, receiver.url)
        push(live, *states(1))
        wait_until(lambda: len(receiver.acknowledged()) >= 2)
        history = list(reversed(attempts(live, created["id"])))
    assert receiver.deliveries[0].webhook_id == receiver.deliveries[1].webhook_id
    assert history[0]["outcome"] == "failed"
    assert history[0]["error"] == "no answer within 0.5 s"
    assert "delivered" in [a["outcome"] for a in history[1:]]


def test_410_disables_and_resuming_sends_the_same_batch(live: httpx.Client) -> None:
    with Receiver(lambda n: (410, 0.0) if n == 0 else (200, 0.0)) as receiver:
        created = subscribe(live, receiver.url)
        push(live, *states(2))
        wait_until(lambda: shown(live, created["id"])["disabled_reason"] == "gone")
        push(live, *states(1, start=3000))
        state = shown(live, created["id"])
        assert state["enabled"] is False and state["lag_events"] == 3
        assert len(receiver.deliveries) == 1  # nothing more is sent to a gone endpoint
        response = live.patch(f"{WEBHOOKS}/{created['id']}", json={"enabled": True}, headers=ADMIN)
        assert response.status_code == 200 and response.json()["enabled"] is True
        wait_until(lambda: shown(live, created["id"])["lag_events"] == 0)
    assert receiver.deliveries[1].webhook_id == receiver.deliveries[0].webhook_id
    assert len(dict.fromkeys(receiver.received_cursors())) == 3


def test_retries_run_out_then_resume_skips_nothing(settings: Settings) -> None:
    with (
        served(settings, webhook_max_retry_hours=0.5 / 3600) as live,
        Receiver(lambda n: (500, 0.0)) as receiver,
    ):
        created = subscribe(live, receiver.url)
        push(live, *states(3))
        wait_until(lambda: shown(live, created["id"])["disabled_reason"] == "failing")
        state = shown(live, created["id"])
        assert state["failing_since"] is not None and state["attempts"] >= 2
        metrics = live.get("/metrics").text
        assert "targetsms_webhook_failing_subscriptions 1.0" in metrics
        assert f'targetsms_webhook_lag_events{{subscription="{created["id"]}"}} 3.0' in metrics
        receiver.behaviour = lambda n: (200, 0.0)
        live.patch(f"{WEBHOOKS}/{created['id']}", json={"enabled": True}, headers=ADMIN)
        wait_until(lambda: shown(live, created["id"])["lag_events"] == 0)
        assert shown(live, created["id"])["failing_since"] is None
    assert len(dict.fromkeys(receiver.received_cursors())) == 3


def test_rotation_signs_with_both_secrets_during_the_overlap(live: httpx.Client) -> None:
    with Receiver() as receiver:
        created = subscribe(live, receiver.url)
        rotated = live.post(f"{WEBHOOKS}/{created['id']}/rotate-secret", headers=ADMIN).json()
        assert rotated["secret"] != created["secret"]
        assert rotated["previous_secret_until"] is not None
        push(live, *states(1))
        wait_until(lambda: bool(receiver.acknowledged()))
    delivery = receiver.acknowledged()[0]
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    delivery.verify(created["secret"])
    delivery.verify(rotated["secret"])
    with pytest.raises(WebhookVerificationError):
        delivery.verify("whsec_" + "QUJD" * 8)


def test_rotation_without_overlap_signs_with_the_new_secret_only(settings: Settings) -> None:
    with served(settings, webhook_secret_overlap_hours=0) as live, Receiver() as receiver:
        created = subscribe(live, receiver.url)
        rotated = live.post(f"{WEBHOOKS}/{created['id']}/rotate-secret", headers=ADMIN).json()
        push(live, *states(1))
        wait_until(lambda: bool(receiver.acknowledged()))
    delivery = receiver.acknowledged()[0]
    delivery.verify(rotated["secret"])
    with pytest.raises(WebhookVerificationError):
        delivery.verify(created["secret"])


def test_replay_redelivers_from_the_chosen_point(live: httpx.Client) -> None:
    with Receiver() as receiver:
        created = subscribe(live, receiver.url)
        push(live, *states(8))
        items = feed(live)
        wait_until(lambda: shown(live, created["id"])["lag_events"] == 0)
        before = len(receiver.acknowledged())
        url = f"{WEBHOOKS}/{created['id']}/replay"
        replayed = live.post(url, json={"after": items[4]["cursor"]}, headers=ADMIN)
        assert replayed.status_code == 200
        assert replayed.json()["cursor"] == items[4]["cursor"]
        wait_until(
            lambda: (
                shown(live, created["id"])["lag_events"] == 0
                and len(receiver.acknowledged()) > before
            )
        )
        again = receiver.acknowledged()[before:]
        assert [c["cursor"] for d in again for c in d.changes] == [i["cursor"] for i in items[5:]]
        # A replayed batch is a new message: consumers deduplicating on webhook-id take it.
        old_ids = {d.webhook_id for d in receiver.acknowledged()[:before]}
        assert not old_ids & {d.webhook_id for d in again}
        since = live.post(url, json={"since": "2000-01-01T00:00:00Z"}, headers=ADMIN).json()
        assert since["lag_events"] == 8
        wait_until(lambda: shown(live, created["id"])["lag_events"] == 0)
        assert receiver.received_cursors()[-8:] == [i["cursor"] for i in items]
        # Bad replay points: a clear 422.
        for body, code in [
            ({}, "replay_point_required"),
            ({"after": "bogus"}, "invalid_cursor"),
            ({"since": "2026-01-01T00:00:00"}, "invalid_parameters"),
        ]:
            response = live.post(url, json=body, headers=ADMIN)
            assert response.status_code == 422 and response.json()["error"] == code, body


def test_a_new_or_rewound_subscription_is_served_at_once_not_at_the_next_poll(
    settings: Settings,
) -> None:
    """Created or replayed through the API, a subscription is picked up at once:
    the first change after it arrives without waiting for the poll (30 s here)."""
    with served(settings, webhook_poll_interval_seconds=30) as live, Receiver() as receiver:
        created = subscribe(live, receiver.url)
        push(live, *states(3))
        wait_until(lambda: len(receiver.received_cursors()) == 3, timeout=10)
        url = f"{WEBHOOKS}/{created['id']}/replay"
        assert live.post(url, json={"after": feed(live)[0]["cursor"]}, headers=ADMIN).is_success
        wait_until(lambda: len(receiver.received_cursors()) == 5, timeout=10)
        assert receiver.received_cursors()[3:] == [item["cursor"] for item in feed(live)[1:]]
