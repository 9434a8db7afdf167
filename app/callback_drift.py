"""Callback URL drift: the provider pushes somewhere other than PUBLIC_URL + our path.

Someone re-registered the account's URL (another system, a colleague, a test
against production), or the provider lost it: statuses then go elsewhere, or
nowhere. The poller role reads get_state.php every CALLBACK_URL_CHECK_MINUTES
and compares. With CALLBACK_URL_AUTOFIX=true (and PUBLIC_URL set) it registers
the expected URL again and reads it back.

The URLs hold the callback token: they are logged and recorded only through
`redact_url`, which shows "<token>" instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app import callback_url, metrics
from app.config import Settings
from app.logs import redact
from app.provider import ProviderError, TargetSMSClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UrlCheck:
    provider_url: str | None  # redacted; None when the provider could not be asked
    expected_url: str | None  # redacted; None when PUBLIC_URL is not set
    matches: bool | None  # None when unknown
    repaired: bool = False
    error: str | None = None

    def record(self) -> dict[str, object]:
        return {
            "provider_url": self.provider_url,
            "expected_url": self.expected_url,
            "matches": self.matches,
            "error": self.error,
        }


def redact_url(url: str, token: str) -> str:
    """`url` with our token, and any callback-path token, shown as "<token>"."""
    return redact(url.replace(token, "<token>") if token else url)


async def check_callback_url(client: TargetSMSClient, settings: Settings, token: str) -> UrlCheck:
    """Compare the provider's URL with ours; repair it when CALLBACK_URL_AUTOFIX allows."""
    expected = callback_url.expected_url(settings, token)
    shown = redact_url(expected, token) if expected else None
    try:
        provider = await client.get_callback_url()
    except ProviderError as exc:
        log.warning("callback URL check: get_state.php failed: %s", exc)
        return UrlCheck(None, shown, None, error=str(exc))
    seen = redact_url(provider, token) if provider else ""
    if expected is None:
        log.info("callback URL check: PUBLIC_URL is not set, so there is nothing to compare")
        return UrlCheck(seen, None, None)
    if provider == expected:
        return UrlCheck(seen, shown, True)
    log.warning(
        "callback URL drift: the provider pushes to %r, expected %r%s",
        seen or "(none)",
        shown,
        "; registering ours again"
        if settings.callback_url_autofix
        else " (set CALLBACK_URL_AUTOFIX=true to repair it, or run `targetsms-receiver "
        "callback-url set`)",
    )
    if not settings.callback_url_autofix:
        return UrlCheck(seen, shown, False)
    return await _repair(client, expected, token, seen, shown)


async def _repair(
    client: TargetSMSClient, expected: str, token: str, seen: str, shown: str | None
) -> UrlCheck:
    # Registered as configured, even if not https: the operator chose PUBLIC_URL and
    # the autofix; `doctor` is where a non-https PUBLIC_URL fails.
    try:
        await callback_url.register(client, expected, token, expected, force=True)
    except (ProviderError, callback_url.NotConfirmed, callback_url.UrlRefused) as exc:
        metrics.CALLBACK_URL_REPAIRS.labels("failed").inc()
        reason = type(exc).__name__ if isinstance(exc, callback_url.UrlRefused) else str(exc)
        log.error("callback URL repair failed: %s", reason)
        return UrlCheck(seen, shown, False, error=f"repair failed: {reason}")
    metrics.CALLBACK_URL_REPAIRS.labels("ok").inc()
    log.warning("callback URL repaired: the provider now pushes to %r (read back)", shown)
    return UrlCheck(shown, shown, True, repaired=True)
