"""Which webhook targets we may connect to: the guard against server-side request forgery.

Subscribers are the company's own systems, so private ranges are allowed; what
is refused is what an attacker who can create a subscription would aim at:
the host itself (loopback), cloud metadata (link-local 169.254.169.254),
multicast and unspecified addresses, unless `WEBHOOK_ALLOWED_NETWORKS` names
them. Plain http needs `WEBHOOK_ALLOW_HTTP=true`.

The check is made on the addresses the name resolves to at the moment of
sending, and the sender then connects to exactly the checked address (the name
kept for Host and TLS): a name that resolved to a public address when the
subscription was made and to 127.0.0.1 now (DNS rebinding) is refused.
Every address a name resolves to must be allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses to consider, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]

THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network"
DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetRefused(Exception):
    """We will not send to this URL; `code` is stable, `detail` says why (no secrets)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL  # as given
    address: str  # the checked address to connect to
    host: str  # the name, for Host and TLS (SNI and certificate check)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_url(url: str, settings: Settings) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise TargetRefused("webhook_url_invalid", "The URL cannot be parsed.") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
        raise TargetRefused("webhook_url_invalid", "The URL must be https://host/...")
    if parsed.scheme == "http" and not settings.webhook_allow_http:
        raise TargetRefused(
            "webhook_url_not_https", "The URL must be https (or set WEBHOOK_ALLOW_HTTP=true)."
        )
    if parsed.userinfo:
        raise TargetRefused(
            "webhook_url_invalid", "Credentials in the URL are not supported: use the signature."
        )
    return parsed


async def check(url: str, settings: Settings, resolver: Resolver = system_resolver) -> Target:
    """The address to connect to for `url`; `TargetRefused` when it is not allowed."""
    parsed = parse_url(url, settings)
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    try:
        addresses = _literal(parsed.host) or await resolver(parsed.host, port)
    except OSError:
        raise TargetRefused(
            "webhook_host_unresolvable", f"The name {parsed.host!r} does not resolve."
        ) from None
    if not addresses:
        raise TargetRefused(
            "webhook_host_unresolvable", f"The name {parsed.host!r} does not resolve."
        )
    for address in addresses:
        refused_because(address, settings)
    return Target(parsed, addresses[0], parsed.host)


def _literal(host: str) -> list[str]:
    """[host] when it is an address already (nothing to resolve), else []."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return []


def refused_because(address: str, settings: Settings) -> None:
    """Raise `TargetRefused` if `address` is of a refused kind and not explicitly allowed."""
    ip = _normalised(address)
    kind = _refused_kind(ip)
    if kind is None or any(ip in net for net in settings.webhook_allowed_networks):
        return
    raise TargetRefused(
        "webhook_target_refused",
        f"The target resolves to {ip}, a {kind} address: refused "
        "(name its network in WEBHOOK_ALLOWED_NETWORKS to allow it).",
    )


def _normalised(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def _refused_kind(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in THIS_NETWORK):
        return "unspecified"
    return None
