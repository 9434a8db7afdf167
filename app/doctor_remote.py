"""`doctor`'s checks of the outside: the provider account and the way in through PUBLIC_URL.

`--reach` makes one request through PUBLIC_URL to our callback path with a
probe token that is deliberately wrong. Our service answers it with its XML
404 before reading any body, so nothing is stored and the real token never
travels; anything else (a proxy's page, a TLS or connection error) means the
provider cannot reach us either.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import httpx
from defusedxml.ElementTree import fromstring

from app.account_check import check_zone, money_below
from app.callback_drift import redact_url
from app.callback_url import expected_url
from app.config import Settings
from app.findings import Finding, fail, ok, warn
from app.provider import (
    AccountBlocked,
    AuthenticationFailed,
    ProviderError,
    TargetSMSClient,
)
from app.tokens import CALLBACK_PREFIX

PROBE_TOKEN = "doctor-probe"  # noqa: S105 (deliberately not our token)
REACH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# What our callback endpoint answers a wrong token (404), or a client outside
# CALLBACK_ALLOWED_NETWORKS (403): both prove the request reached us.
OUR_ANSWERS = {404: "not found", 403: "forbidden"}


async def provider(
    client: TargetSMSClient, settings: Settings, token: str | None, now: datetime
) -> list[Finding]:
    """Credentials, then (when accepted) the callback URL, the zone and the balance."""
    try:
        registered = await client.get_callback_url()
    except (AuthenticationFailed, AccountBlocked) as exc:
        return [
            fail(
                "provider credentials",
                f"refused: {exc.text}",
                "check TARGETSMS_LOGIN and TARGETSMS_PASSWORD (and that the account is active)",
            )
        ]
    except ProviderError as exc:
        return [fail("provider", f"no usable answer: {exc}", "check TARGETSMS_API_URL, network")]
    found = [ok("provider credentials", "accepted"), callback_url(registered, settings, token)]
    return [*found, await zone(client, settings, now), await money(client, settings)]


def callback_url(registered: str, settings: Settings, token: str | None) -> Finding:
    if token is None:
        return warn(
            "callback URL",
            "not compared: no callback token yet (CALLBACK_TOKEN unset, none stored)",
            "run `targetsms-receiver callback-path` or start the service once",
        )
    expected = expected_url(settings, token)
    if expected is None:
        return warn(
            "callback URL",
            "PUBLIC_URL is not set, so the registered URL cannot be compared",
            "set PUBLIC_URL",
        )
    if registered == expected:
        return ok("callback URL", f"the provider pushes to {redact_url(expected, token)}")
    shown = repr(redact_url(registered, token)) if registered else "nothing (none set)"
    return fail(
        "callback URL",
        f"the provider pushes to {shown}, expected {redact_url(expected, token)!r}",
        "run `targetsms-receiver callback-url set` (or set CALLBACK_URL_AUTOFIX=true)",
    )


async def zone(client: TargetSMSClient, settings: Settings, now: datetime) -> Finding:
    try:
        check = check_zone(await client.account_time(), now, settings)
    except ProviderError as exc:
        return warn("account zone", f"time.php failed: {exc}", "try again later")
    offset = check.offset.total_seconds()
    if check.zone_wrong:
        return fail(
            "account zone",
            f"the account's clock is {offset / 3600:+.2f} h from {settings.targetsms_timezone}: "
            "stored status times are shifted by as much",
            f"set TARGETSMS_TIMEZONE={check.suggested_zone or '(a zone with that offset)'}",
        )
    if check.clock_off:
        return warn("account zone", f"the account's clock is {offset:+.0f} s from ours", "")
    return ok("account zone", f"{settings.targetsms_timezone} matches ({offset:+.0f} s)")


async def money(client: TargetSMSClient, settings: Settings) -> Finding:
    try:
        left = await client.balance()
    except ProviderError as exc:
        return warn("balance", f"balance.php failed: {exc}", "try again later")
    sms = ", ".join(f"{s.area} {s.count}" for s in left.sms)
    detail = f"{left.money} {left.currency or ''}".strip() + (f" (SMS left: {sms})" if sms else "")
    if left.money <= 0:
        return fail("balance", f"{detail}: the provider stops sending", "top up the account")
    if money_below(left.money, settings):
        return warn("balance", f"{detail}, below BALANCE_WARN_BELOW", "top up the account soon")
    return ok("balance", detail)


def public_url(settings: Settings) -> Finding:
    base = settings.public_url.strip()
    if not base:
        return warn(
            "public URL", "PUBLIC_URL is not set", "set it to the https address of the proxy"
        )
    parts = urlsplit(base)
    if parts.scheme != "https" or not parts.hostname:
        return fail(
            "public URL",
            f"PUBLIC_URL {base!r} is not https://host",
            "serve the callback over https (the URL carries the token) and set PUBLIC_URL",
        )
    return ok("public URL", base)


async def reach(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> Finding:
    base = settings.public_url.strip().rstrip("/")
    if not base:
        return warn("public URL reach", "PUBLIC_URL is not set: nothing to try", "set PUBLIC_URL")
    probe = f"{base}{CALLBACK_PREFIX}{PROBE_TOKEN}"
    try:
        async with httpx.AsyncClient(timeout=REACH_TIMEOUT, transport=transport) as http:
            response = await http.post(probe, content=b"", headers={"Content-Type": "text/xml"})
    except httpx.HTTPError as exc:
        return fail("public URL reach", f"{probe}: {type(exc).__name__}", _REACH_ACTION)
    if _ours(response):
        return ok("public URL reach", f"our callback endpoint answers at {base}{CALLBACK_PREFIX}")
    return fail(
        "public URL reach",
        f"{probe} answered HTTP {response.status_code}, not our callback endpoint",
        _REACH_ACTION,
    )


_REACH_ACTION = "check DNS, TLS and that the proxy passes /callbacks/targetsms/ to the service"


def _ours(response: httpx.Response) -> bool:
    expected = OUR_ANSWERS.get(response.status_code)
    if expected is None:
        return False
    try:
        root = fromstring(response.content, forbid_dtd=True)
    except Exception:
        return False
    error = root.find("error") if root.tag == "response" else None
    return error is not None and (error.text or "").strip() == expected
