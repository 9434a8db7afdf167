"""Dashboard sessions: a signed, expiring cookie that identifies a key without holding it.

The cookie is `itsdangerous`-signed JSON `{"k": key hash, "r": role, "c": CSRF token}`.
The key hash is an HMAC of the API key under the session secret, so the cookie
reveals nothing about the key, and the signature stops anyone making one up.
Every request recomputes the hashes of the keys configured *now*: a session
whose key has been removed from `API_KEYS`/`ADMIN_API_KEYS` (or moved to the
other list) ends at once. Before sign-in the cookie holds only a CSRF token,
so that the sign-in form is protected too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings

Role = Literal["read", "admin"]
COOKIE = "tsr_ui_session"
PATH = "/ui/"
SALT = "targetsms-receiver.ui.session"
HASH_CHARS = 32  # 128 bits of the HMAC: enough to tell keys apart, useless to recover one
SECRET_KEY = "ui.session_secret"  # noqa: S105 (the instance_settings row used when SESSION_SECRET is unset)


@dataclass(frozen=True, slots=True)
class Session:
    key_hash: str  # "" before sign-in
    role: Role | None
    csrf: str

    @property
    def signed_in(self) -> bool:
        return self.role is not None

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class Sessions:
    """Reads and writes the session cookie for one app (its secret and settings)."""

    def __init__(self, settings: Settings, secret: str) -> None:
        self.settings = settings
        self._secret = secret.encode()
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.max_age = int(settings.session_max_age_hours * 3600)

    def key_hash(self, key: str) -> str:
        digest = hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()
        return digest[:HASH_CHARS]

    def role_of(self, key_hash: str) -> Role | None:
        """The role of the configured key with this hash (admin first), None if none has it."""
        admin = self._any_has(key_hash, self.settings.admin_api_keys)
        read = self._any_has(key_hash, self.settings.api_keys)
        return "admin" if admin else "read" if read else None

    def _any_has(self, key_hash: str, keys: list[SecretStr]) -> bool:
        # Every key is hashed and compared, so the time taken does not tell which matched.
        found = False
        for key in keys:
            found |= hmac.compare_digest(self.key_hash(key.get_secret_value()), key_hash)
        return found

    def read(self, request: Request) -> Session | None:
        """The request's valid session (signed in or not), None when absent or no longer valid."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=self.max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        key_hash, role, csrf = data.get("k"), data.get("r"), data.get("c")
        if not isinstance(key_hash, str) or not isinstance(csrf, str) or not csrf:
            return None
        if not key_hash:
            return Session("", None, csrf)
        if role not in ("read", "admin") or self.role_of(key_hash) != role:
            return None  # the key was removed, or moved to the other list
        return Session(key_hash, role, csrf)

    def write(self, request: Request, response: Response, session: Session) -> None:
        value = self._serializer.dumps(
            {"k": session.key_hash, "r": session.role, "c": session.csrf}
        )
        set_cookie(request, response, COOKIE, value, self.max_age)

    def clear(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=PATH, secure=_secure(request), httponly=True, samesite="strict"
        )


def new_session(key_hash: str = "", role: Role | None = None) -> Session:
    return Session(key_hash, role, secrets.token_urlsafe(32))


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """Every dashboard cookie: HttpOnly, SameSite=Strict, for /ui/ only, with an expiry,
    and Secure when the client came over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def _secure(request: Request) -> bool:
    # The scheme is the proxy's X-Forwarded-Proto only when the proxy is trusted
    # (TRUSTED_PROXIES, app/network.py).
    return request.url.scheme == "https"


def csrf_matches(session: Session | None, given: object) -> bool:
    if session is None or not isinstance(given, str) or not given:
        return False
    return secrets.compare_digest(session.csrf.encode(), given.encode())
