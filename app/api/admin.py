"""`GET`/`PUT /api/v1/admin/callback-url`: the push URL the provider has for us.

Admin keys only. The answers hold the callback URL and so the token: admins
need it, but it must never be logged (the access log writes paths only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app import callback_url
from app.api.auth import AdminKey
from app.api.deps import RuntimeDep
from app.api.errors import COMMON_ERRORS, ApiError, openapi_error
from app.provider import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    TargetSMSClient,
)
from app.runtime import Runtime
from app.tokens import CALLBACK_PREFIX

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminKey])

# An admin waits for the answer: one retry, not the poller's four.
API_RETRIES = 1
EXAMPLE_URL = f"https://sms-status.example.org{CALLBACK_PREFIX}Xy3...token"


class CallbackUrlState(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "provider_url": EXAMPLE_URL,
                "expected_url": EXAMPLE_URL,
                "matches": True,
            }
        }
    )

    provider_url: str = Field(description='The URL the provider pushes to now ("" for none).')
    expected_url: str | None = Field(
        description="PUBLIC_URL + our callback path and token; null when PUBLIC_URL is not set."
    )
    matches: bool = Field(description="provider_url is expected_url.")


class CallbackUrlUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"force": False}})

    url: str | None = Field(
        default=None, max_length=2000, description="The URL to set; default: expected_url."
    )
    force: bool = Field(
        default=False, description="Set it even if it is not https or not our callback path."
    )


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: openapi_error("No API key, or a wrong one.", "unauthorized", "The API key is not valid."),
    403: openapi_error("A read key: this needs one from ADMIN_API_KEYS.", "forbidden", "..."),
    422: openapi_error(
        "The URL is refused (not https, not our callback path and token); "
        "codes callback_url_not_https, callback_url_wrong_path, callback_url_invalid.",
        "callback_url_not_https",
        "The URL must be https://host/... (pass force to allow).",
    ),
    502: openapi_error(
        "The provider refused the request (provider_rejected, with its sentence), answered "
        "something unreadable (provider_error), or reports another URL after the set "
        "(callback_url_not_confirmed).",
        "provider_rejected",
        "Неправильный логин или пароль",
    ),
    503: openapi_error(
        "TARGETSMS_LOGIN/TARGETSMS_PASSWORD (provider_not_configured) or, for a PUT without "
        "a URL, PUBLIC_URL (public_url_not_configured) is not set.",
        "provider_not_configured",
        "Set TARGETSMS_LOGIN and TARGETSMS_PASSWORD.",
    ),
    504: openapi_error("The provider did not answer.", "provider_unavailable", "..."),
    500: COMMON_ERRORS[500],
}


@asynccontextmanager
async def _provider(runtime: Runtime) -> AsyncIterator[TargetSMSClient]:
    """The provider client, with every failure turned into an ApiError."""
    try:
        client = callback_url.provider_client(runtime.settings, retries=API_RETRIES)
    except callback_url.ProviderNotConfigured:
        raise ApiError(
            503, "provider_not_configured", "Set TARGETSMS_LOGIN and TARGETSMS_PASSWORD."
        ) from None
    try:
        async with client:
            yield client
    except ProviderRejected as exc:
        raise ApiError(502, "provider_rejected", exc.text[:200]) from None
    except ProviderUnavailable as exc:
        raise ApiError(504, "provider_unavailable", str(exc)) from None
    except ProviderError as exc:
        raise ApiError(502, "provider_error", str(exc)) from None


def _state(url: callback_url.CallbackUrl) -> CallbackUrlState:
    return CallbackUrlState(
        provider_url=url.provider_url, expected_url=url.expected_url, matches=url.matches
    )


@router.get(
    "/callback-url",
    summary="The push URL the provider has, and the one it should have",
    response_model=CallbackUrlState,
    responses=RESPONSES,
)
async def get_callback_url(runtime: RuntimeDep) -> CallbackUrlState:
    expected = callback_url.expected_url(runtime.settings, runtime.callback_token)
    async with _provider(runtime) as client:
        return _state(await callback_url.current(client, expected))


@router.put(
    "/callback-url",
    summary="Register the push URL with the provider, then read it back",
    response_model=CallbackUrlState,
    responses=RESPONSES,
)
async def put_callback_url(
    runtime: RuntimeDep, update: CallbackUrlUpdate | None = None
) -> CallbackUrlState:
    """Sets `url` (default: PUBLIC_URL + our callback path) and confirms it by reading
    it back. Refuses a URL that is not https or does not end in our callback path
    with the right token, unless `force`."""
    update = update or CallbackUrlUpdate()
    settings, token = runtime.settings, runtime.callback_token
    try:
        url = callback_url.url_to_set(settings, token, update.url)
        callback_url.check_url(url, token, force=update.force)
    except callback_url.PublicUrlNotConfigured:
        raise ApiError(
            503, "public_url_not_configured", "Give a URL, or set PUBLIC_URL and restart."
        ) from None
    except callback_url.UrlRefused as exc:
        raise ApiError(422, exc.code, exc.detail) from None
    expected = callback_url.expected_url(settings, token)
    async with _provider(runtime) as client:
        try:
            done = await callback_url.register(client, url, token, expected, force=update.force)
        except callback_url.NotConfirmed:
            raise ApiError(
                502,
                "callback_url_not_confirmed",
                "The provider reports a different URL after setting it.",
            ) from None
    return _state(done)
