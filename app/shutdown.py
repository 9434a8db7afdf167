"""SIGTERM and SIGINT: tell the app first, then let uvicorn shut down.

uvicorn stops accepting connections as soon as it handles the signal, so for
`/readyz`'s 503 to be seen at all (by a load balancer that checks readiness)
the signal can be held back for `SHUTDOWN_DELAY_SECONDS` while the service
keeps serving. Either way `Health.stopping` is set at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.health import Health

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SignalHandler = Callable[[int, FrameType | None], Any]


def watch_signals(health: Health, delay: float) -> Callable[[], None]:
    """Chain onto uvicorn's SIGTERM/SIGINT handlers; returns the undo. Call on the loop."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # in-thread servers (tests) get no signals
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in SHUTDOWN_SIGNALS}
    for sig, handler in previous.items():
        if callable(handler):
            signal.signal(sig, _on_signal(health, loop, handler, delay))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _on_signal(
    health: Health, loop: asyncio.AbstractEventLoop, passed_on: SignalHandler, delay: float
) -> SignalHandler:
    def handle(sig: int, frame: FrameType | None) -> None:
        first = not health.shutting_down
        health.shutting_down = True
        # A signal handler may run between any two bytecodes of the loop's own
        # code: hand the event to the loop rather than set it from here.
        loop.call_soon_threadsafe(health.stopping.set)
        if first and delay > 0:
            later = threading.Timer(delay, passed_on, (sig, frame))
            later.daemon = True
            later.start()
        else:
            passed_on(sig, frame)

    return handle
