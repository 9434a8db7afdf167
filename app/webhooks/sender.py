"""One signed POST of one batch to one subscriber, and what came of it.

The request goes to the address `targets.check` approved, never to a name
httpx would resolve again: the URL's host is replaced by that address, and the
name is kept for the Host header and for TLS (SNI and the certificate check,
through httpcore's `sni_hostname` extension). Redirects are not followed and
proxies from the environment are not used: either could send the request
somewhere unchecked.

Use one `Sender` per subscription URL: connections are pooled by address, and
a connection opened for one name must not carry another name's request. Share
one SSL context between them: loading the CA bundle takes ~0.1 s.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import certifi
import httpx

from app.config import Settings
from app.webhooks import signing, targets

EXCERPT_BYTES = 1024
ERROR_LENGTH = 300


@dataclass(frozen=True, slots=True)
class Result:
    outcome: str  # "delivered" (2xx), "gone" (410), "failed", "refused" (nothing sent)
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    excerpt: str | None = None


class Sender:
    def __init__(
        self, settings: Settings, resolver: targets.Resolver, ssl_context: ssl.SSLContext
    ) -> None:
        self.settings, self.resolver = settings, resolver
        self.timeout = settings.webhook_timeout_seconds
        self.client = httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, trust_env=False, verify=ssl_context
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def send(
        self, url: str, webhook_id: str, secrets_in_use: list[str], body: bytes
    ) -> Result:
        try:
            target = await targets.check(url, self.settings, self.resolver)
        except targets.TargetRefused as exc:
            return Result("refused", error=exc.detail)
        timestamp = int(time.time())
        headers = {
            "host": target.url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": "targetsms-receiver-webhooks",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(
                secrets_in_use, webhook_id, timestamp, body
            ),
        }
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        request = self.client.build_request(
            "POST",
            target.url.copy_with(host=target.address),
            content=body,
            headers=headers,
            extensions=extensions,
        )
        return await self._post(request)

    async def _post(self, request: httpx.Request) -> Result:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client.send(request, stream=True)
                try:
                    excerpt = await _excerpt(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return Result("failed", error=f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return Result("failed", error=_describe(exc))
        latency_ms = round((time.monotonic() - started) * 1000)
        code = response.status_code
        outcome = "delivered" if 200 <= code < 300 else "gone" if code == 410 else "failed"
        error = None if outcome == "delivered" else f"HTTP {code}"
        return Result(outcome, code, latency_ms, error, excerpt)


async def _excerpt(response: httpx.Response) -> str:
    """The first KiB of the answer; the rest is not read."""
    kept = b""
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= EXCERPT_BYTES:
            break
    return kept[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def _describe(exc: httpx.HTTPError) -> str:
    # httpx's messages name the problem, not the URL (the URL is not repeated).
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:ERROR_LENGTH]


def ssl_context() -> ssl.SSLContext:
    """The TLS settings for every sender: certificates checked against certifi's CAs."""
    return ssl.create_default_context(cafile=certifi.where())
