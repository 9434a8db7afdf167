"""Secrets and signatures, as the Standard Webhooks spec (1.0.0) defines them.

A secret is `whsec_` + base64 of random bytes; the HMAC key is the decoded
part. A delivery's `webhook-signature` is `v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}">`, once per secret in use (space
separated during a rotation), and consumers accept any one that matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec allows 24 to 64


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature_header(
    secrets_in_use: Iterable[str], webhook_id: str, timestamp: int, body: bytes
) -> str:
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(f"v1,{_sign(secret, content)}" for secret in secrets_in_use)


def _sign(secret: str, content: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")
