"""The poller role's self-healing: the checks it runs around each pass.

Before a pass: callback silence (every pass; while silent, the pass uses
POLL_AFTER_SECONDS_WHEN_SILENT), then, when due, the callback URL check
(every CALLBACK_URL_CHECK_MINUTES) and the account check (time.php and
balance.php, every ACCOUNT_CHECK_MINUTES). After a pass: the heartbeat.
Each writes its record in `instance_settings` (app/heartbeats.py) for
`doctor` and the dashboard.

Nothing here may stop the poller: a provider failure is a recorded outcome,
and any other failure of a check is logged and the check is tried again at
its next turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from app import heartbeats
from app.account_check import check_account
from app.callback_drift import check_callback_url
from app.config import Settings
from app.poller import PassResult, utc_now
from app.provider import TargetSMSClient
from app.silence import SilenceWatch, callback_silence
from app.tokens import callback_token

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class SelfHeal:
    """Given to `Poller(hooks=...)`; one per poller process."""

    def __init__(
        self, settings: Settings, engine: Engine, client: TargetSMSClient, *, clock: Clock = utc_now
    ) -> None:
        self.settings, self.engine, self.client, self.clock = settings, engine, client, clock
        self.silence = SilenceWatch()
        self._next: dict[str, datetime] = {}

    async def before_pass(self) -> int | None:
        """Run the checks that are due; POLL_AFTER_SECONDS for this pass (None: the setting)."""
        silent = await self._guarded("callback silence", self._silence)
        await self._when_due("callback URL", self.settings.callback_url_check_minutes, self._url)
        await self._when_due("account", self.settings.account_check_minutes, self._account)
        return self.settings.poll_after_seconds_when_silent if silent else None

    async def after_pass(self, result: PassResult) -> None:
        record = {
            "at": heartbeats.iso(self.clock()),
            "ok": result.error is None,
            "asked": result.claimed,
            "error": result.error,
            "silent": self.silence.silent,
        }
        await self._guarded("heartbeat", self._write, heartbeats.POLLER_LAST_PASS, record)

    async def _silence(self) -> bool:
        silence = await asyncio.to_thread(
            callback_silence, self.engine, self.settings, self.clock()
        )
        return self.silence.observe(silence, self.settings)

    async def _url(self) -> None:
        token = await asyncio.to_thread(callback_token, self.settings, self.engine)
        check = await check_callback_url(self.client, self.settings, token)
        record = {"at": heartbeats.iso(self.clock())} | check.record()
        await self._write(heartbeats.CALLBACK_URL_LAST_CHECK, record)

    async def _account(self) -> None:
        check = await check_account(self.client, self.settings, self.clock())
        record = {"at": heartbeats.iso(self.clock())} | check.record()
        await self._write(heartbeats.ACCOUNT_LAST_CHECK, record)

    async def _write(self, key: str, record: dict[str, Any]) -> None:
        await asyncio.to_thread(heartbeats.write, self.engine, key, record)

    async def _when_due(
        self, name: str, minutes: float, check: Callable[[], Awaitable[None]]
    ) -> None:
        now = self.clock()
        if now < self._next.get(name, now):
            return
        self._next[name] = now + timedelta(minutes=minutes)
        await self._guarded(f"{name} check", check)

    async def _guarded(self, name: str, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        try:
            return await call(*args)
        except Exception as exc:
            # The type only: a database error's text can hold statements and values.
            log.warning(
                "self-healing: the %s failed (%s); the poller goes on", name, type(exc).__name__
            )
            return None
