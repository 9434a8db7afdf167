"""The push URL registered with the provider: what it is, what it should be, setting it.

Shared by `targetsms-receiver callback-url` and `/api/v1/admin/callback-url`.
The URL holds the secret callback token, so neither it nor anything derived
from it is ever logged or put in an exception message.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from app.config import Settings
from app.provider import TargetSMSClient
from app.tokens import CALLBACK_PREFIX, callback_path, tokens_match

# One provider call may take this long per attempt; the client retries on top.
PROVIDER_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class ProviderNotConfigured(Exception):
    """TARGETSMS_LOGIN or TARGETSMS_PASSWORD is not set."""


class PublicUrlNotConfigured(Exception):
    """No URL given and PUBLIC_URL is not set, so there is no URL of our own to register."""


class UrlRefused(ValueError):
    """Not a URL at which the provider reaches our callback endpoint (pass force to skip)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class NotConfirmed(Exception):
    """After setting the URL, the provider reports a different one."""


@dataclass(frozen=True, slots=True)
class CallbackUrl:
    provider_url: str  # "" when the provider has none
    expected_url: str | None  # None when PUBLIC_URL is not set

    @property
    def matches(self) -> bool:
        return self.expected_url is not None and self.provider_url == self.expected_url


def provider_client(
    settings: Settings, *, retries: int = 4, transport: httpx.AsyncBaseTransport | None = None
) -> TargetSMSClient:
    if not settings.targetsms_login or not settings.targetsms_password.get_secret_value():
        raise ProviderNotConfigured("set TARGETSMS_LOGIN and TARGETSMS_PASSWORD")
    return TargetSMSClient(
        settings.targetsms_api_url,
        settings.targetsms_login,
        settings.targetsms_password,
        timeout=PROVIDER_TIMEOUT,
        retries=retries,
        transport=transport,
    )


def expected_url(settings: Settings, token: str) -> str | None:
    base = settings.public_url.strip().rstrip("/")
    return f"{base}{callback_path(token)}" if base else None


def check_url(url: str, token: str, *, force: bool = False) -> None:
    """Raise UrlRefused unless `url` is https and ends in our callback path and token.

    With `force` only a URL that cannot be sent at all (empty, spaces, control
    characters, unparsable) is refused.
    """
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        raise UrlRefused("callback_url_invalid", "The URL is empty or holds spaces or controls.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UrlRefused("callback_url_invalid", "The URL cannot be parsed.") from None
    if force:
        return
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise UrlRefused(
            "callback_url_not_https", "The URL must be https://host/... (pass force to allow)."
        )
    head, _, given = parts.path.rpartition("/")
    if not (head + "/").endswith(CALLBACK_PREFIX) or not tokens_match(given, token):
        raise UrlRefused(
            "callback_url_wrong_path",
            f"The URL's path must end in {CALLBACK_PREFIX}<our token> "
            "(see `targetsms-receiver callback-path`; pass force to allow).",
        )


async def current(client: TargetSMSClient, expected: str | None) -> CallbackUrl:
    return CallbackUrl(await client.get_callback_url(), expected)


async def register(
    client: TargetSMSClient, url: str, token: str, expected: str | None, *, force: bool = False
) -> CallbackUrl:
    """Set `url`, then read it back; NotConfirmed if the provider then has another."""
    check_url(url, token, force=force)
    await client.set_callback_url(url)
    now = await client.get_callback_url()
    if now != url:
        raise NotConfirmed("the provider reports a different URL after setting it")
    return CallbackUrl(now, expected)


def url_to_set(settings: Settings, token: str, url: str | None) -> str:
    """`url`, or our own expected URL when none is given."""
    if url:
        return url.strip()
    own = expected_url(settings, token)
    if own is None:
        raise PublicUrlNotConfigured("give a URL or set PUBLIC_URL")
    return own
