"""Role heartbeats and last checks: JSON objects under fixed keys in `instance_settings`.

Written by the background roles (the poller), read by `doctor` and the
dashboard, so that either knows what happened in another process or replica.
The keys and their fields (README, "Self-healing and doctor"):

- "poller.last_pass": {"at", "ok", "asked", "error", "silent"}
- "callback_url.last_check": {"at", "provider_url", "expected_url", "matches", "error"}
  (URLs with the token replaced by "<token>")
- "account.last_check": {"at", "zone_offset_seconds", "suggested_zone", "balance", "sms",
  "error"} ("sms": messages the money buys, per direction)
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from app.db import write_transaction
from app.models import InstanceSetting

POLLER_LAST_PASS = "poller.last_pass"  # noqa: S105 (a key name)
CALLBACK_URL_LAST_CHECK = "callback_url.last_check"
ACCOUNT_LAST_CHECK = "account.last_check"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def write(engine: Engine, key: str, value: dict[str, Any]) -> None:
    """Replace the record under `key` (under the write lock, so writers never collide)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    with write_transaction(engine) as conn:
        changed = conn.execute(
            update(InstanceSetting).where(InstanceSetting.key == key).values(value=text)
        ).rowcount
        if not changed:
            conn.execute(insert(InstanceSetting), {"key": key, "value": text})


def read(conn: Connection, key: str) -> dict[str, Any] | None:
    """The record under `key`; None when there is none or it is not a JSON object."""
    text = conn.scalar(select(InstanceSetting.value).where(InstanceSetting.key == key))
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
