"""Sign-in attempts per client: a sliding window, in this process's memory.

In memory, so each worker process counts on its own (with `--workers N` a
client gets up to N times the limit) and a restart forgets; it is there to
make guessing keys slow, and keys are long random strings anyway.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_CLIENTS = 10_000  # the least recently seen are forgotten beyond this


class AttemptLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, client: str) -> float:
        """Count an attempt; 0 if allowed, else the seconds until one will be."""
        now = self._clock()
        with self._lock:
            times = self._attempts.pop(client, None) or deque()
            while times and times[0] <= now - WINDOW_SECONDS:
                times.popleft()
            self._attempts[client] = times
            if len(self._attempts) > MAX_CLIENTS:
                self._attempts.popitem(last=False)
            if len(times) >= self.per_minute:
                return times[0] + WINDOW_SECONDS - now
            times.append(now)
            return 0.0
