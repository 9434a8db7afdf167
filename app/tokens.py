"""The callback token: configured, or generated once and kept in the database."""

from __future__ import annotations

import secrets

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
    if settings.callback_token is not None and settings.callback_token.get_secret_value():
        return settings.callback_token.get_secret_value()
    with write_transaction(engine) as conn:
        stored = conn.scalar(select(InstanceSetting.value).where(InstanceSetting.key == TOKEN_KEY))
        if stored is not None:
            return stored
        token = secrets.token_urlsafe(TOKEN_BYTES)
        conn.execute(insert(InstanceSetting), {"key": TOKEN_KEY, "value": token})
        return token


def callback_path(token: str) -> str:
    return CALLBACK_PREFIX + token


def tokens_match(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
