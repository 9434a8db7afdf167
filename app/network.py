"""Who the client is: proxy trust, and the callback endpoint's source allowlist.

The client address is taken from `X-Forwarded-For` only when the direct peer
is in `TRUSTED_PROXIES`; with the setting empty nobody is trusted, whatever
uvicorn's own default (`FORWARDED_ALLOW_IPS`, 127.0.0.1) says: `serve` turns
uvicorn's middleware off and the app installs its own, so the rule lives in
one place and applies under any server.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.config import IPNetwork, Settings


def trust_proxies(app: FastAPI, settings: Settings) -> None:
    """Read the client address from `X-Forwarded-For` set by a trusted proxy."""
    if settings.trusted_proxies:
        trusted = [str(network) for network in settings.trusted_proxies]
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)


def allowed(host: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    """True when `networks` is empty or holds `host` (an address, after proxy trust)."""
    return not networks or _in_networks(host, networks)


@lru_cache(maxsize=4096)
def _in_networks(host: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return any(address in network for network in networks)
