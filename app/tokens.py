"""Secrets the service makes for itself: configured, or generated once and kept in the database.

The callback token, and the dashboard's session-signing secret.
"""

from __future__ import annotations

import secrets

from pydantic import SecretStr
from sqlalchemy import Engine, insert, select

from app.config import Settings
from app.db import write_transaction
from app.models import InstanceSetting

TOKEN_KEY = "callback_token"  # noqa: S105 (a row name, not a secret)
TOKEN_BYTES = 32  # 256 bits, 43 URL-safe characters
# The provider pushes to this prefix + the token; the token is the only secret in it.
CALLBACK_PREFIX = "/callbacks/targetsms/"


def callback_token(settings: Settings, engine: Engine) -> str:
    """`CALLBACK_TOKEN` if set; otherwise the stored one, made on first use."""
    return configured_or_stored(settings.callback_token, engine, TOKEN_KEY)


def configured_or_stored(configured: SecretStr | None, engine: Engine, key: str) -> str:
    """`configured` if set; otherwise the secret stored under `key`, made on first use."""
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    with write_transaction(engine) as conn:
        stored = conn.scalar(select(InstanceSetting.value).where(InstanceSetting.key == key))
        if stored is not None:
            return stored
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        conn.execute(insert(InstanceSetting), {"key": key, "value": secret})
        return secret


def callback_path(token: str) -> str:
    return CALLBACK_PREFIX + token


def tokens_match(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
