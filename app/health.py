"""Readiness: the database answers, and shutdown has not begun.

`stopping` is set when a SIGTERM or SIGINT arrives (see `shutdown`), before
the server stops taking connections: `/readyz` turns 503 and long polls of
the change feed answer at once instead of holding the shutdown.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, text

READY_TIMEOUT_SECONDS = 2.0


class Health:
    def __init__(self, engine: Engine, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.engine = engine
        self.timeout = timeout
        # Both set by the signal handler: the flag at once, the event (for
        # waiters) through the loop.
        self.shutting_down = False
        self.stopping = asyncio.Event()
        # At most one check in flight: a hung database must not pile up threads.
        self._check: asyncio.Future[None] | None = None

    async def database_problem(self) -> str | None:
        """None when `SELECT 1` succeeds within the timeout, else what went wrong."""
        if self._check is None or self._check.done():
            self._check = asyncio.get_running_loop().run_in_executor(None, self._select_one)
        try:
            await asyncio.wait_for(asyncio.shield(self._check), self.timeout)
        except TimeoutError:
            return f"the database did not answer within {self.timeout:g} s"
        except Exception as exc:
            return f"the database is unreachable ({type(exc).__name__})"
        return None

    def _select_one(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
