"""A real local webhook receiver, and settings that let deliveries reach it quickly."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

from app.config import Settings

# What the receiver answers to its n-th request (0-based): (status, seconds to wait first).
Behaviour = Callable[[int], tuple[int, float]]


def always_ok(_: int) -> tuple[int, float]:
    return 204, 0.0


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    started: float
    ended: float = 0.0
    answered: int = 0

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    @property
    def changes(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.payload["data"]["changes"]
        return found

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> None:
        """As a consumer does, with the reference library (raises if it does not verify)."""
        Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """An HTTP server on loopback that records every POST, its timing and its overlap."""

    behaviour: Behaviour = always_ok
    deliveries: list[Delivery] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {key.lower(): value for key, value in self.headers.items()}
                delivery = Delivery(headers, body, time.monotonic())
                with receiver.lock:
                    index = len(receiver.deliveries)
                    receiver.deliveries.append(delivery)
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                status, delay = receiver.behaviour(index)
                try:
                    time.sleep(delay)
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up (timeout): it is gone
                finally:
                    delivery.ended, delivery.answered = time.monotonic(), status
                    with receiver.lock:
                        receiver.in_flight -= 1

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def acknowledged(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.ended and 200 <= d.answered < 300]

    def received_cursors(self) -> list[str]:
        """The cursors of every change in the acknowledged deliveries, in arrival order."""
        return [change["cursor"] for d in self.acknowledged() for change in d.changes]


def webhook_settings(settings: Settings, **overrides: Any) -> Settings:
    """`settings`, letting deliveries reach a loopback receiver, with short timings."""
    values: dict[str, Any] = {
        "webhook_allow_http": True,
        "webhook_allowed_networks": [ipaddress.ip_network("127.0.0.0/8")],
        "webhook_timeout_seconds": 1.0,
        "webhook_poll_interval_seconds": 0.1,
        "webhook_retry_schedule_seconds": [0.1, 0.2],
        "webhook_batch_size": 5,
    } | overrides
    return settings.model_copy(update=values)


def webhook_environment(settings: Settings) -> dict[str, str]:
    """Environment variables giving a CLI process the webhook settings of `settings`."""
    return {
        "DATABASE_URL": settings.database_url,
        "WEBHOOK_ALLOW_HTTP": str(settings.webhook_allow_http).lower(),
        "WEBHOOK_ALLOWED_NETWORKS": ",".join(map(str, settings.webhook_allowed_networks)),
        "WEBHOOK_TIMEOUT_SECONDS": str(settings.webhook_timeout_seconds),
        "WEBHOOK_POLL_INTERVAL_SECONDS": str(settings.webhook_poll_interval_seconds),
        "WEBHOOK_RETRY_SCHEDULE_SECONDS": ",".join(
            map(str, settings.webhook_retry_schedule_seconds)
        ),
        "WEBHOOK_BATCH_SIZE": str(settings.webhook_batch_size),
    }


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)
