"""Bearer API keys: `API_KEYS` read, `ADMIN_API_KEYS` read and administer.

There is no configuration in which the API answers without a key. Keys are
compared in constant time and never logged.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.api.deps import RuntimeDep
from app.api.errors import ApiError
from app.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="An API key from API_KEYS or ADMIN_API_KEYS.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _matches(given: str, keys: list[SecretStr]) -> bool:
    # Check every key, so the time taken does not tell which one matched.
    found = False
    for key in keys:
        found |= secrets.compare_digest(given.encode(), key.get_secret_value().encode())
    return found


def _presented_key(credentials: HTTPAuthorizationCredentials | None, runtime: Runtime) -> str:
    settings = runtime.settings
    if not settings.api_keys and not settings.admin_api_keys:
        raise ApiError(
            401,
            "no_api_keys_configured",
            "The API has no keys configured: set API_KEYS (comma-separated) and restart.",
            CHALLENGE,
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "Send 'Authorization: Bearer <key>'.", CHALLENGE)
    return credentials.credentials


async def require_read_key(credentials: Credentials, runtime: RuntimeDep) -> None:
    key = _presented_key(credentials, runtime)
    settings = runtime.settings
    if not _matches(key, settings.api_keys) and not _matches(key, settings.admin_api_keys):
        raise ApiError(401, "unauthorized", "The API key is not valid.", CHALLENGE)


async def require_admin_key(credentials: Credentials, runtime: RuntimeDep) -> None:
    key = _presented_key(credentials, runtime)
    if _matches(key, runtime.settings.admin_api_keys):
        return
    if _matches(key, runtime.settings.api_keys):
        raise ApiError(403, "forbidden", "This endpoint needs a key from ADMIN_API_KEYS.")
    raise ApiError(401, "unauthorized", "The API key is not valid.", CHALLENGE)


ReadKey = Depends(require_read_key)
AdminKey = Depends(require_admin_key)
