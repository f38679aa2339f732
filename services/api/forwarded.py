"""The caller's address behind a load balancer. The auth-failure throttle and the activity log
key on the client's address; behind nginx every request comes from the proxy's, so one client's
bad tokens would block everyone. A peer listed as a trusted proxy has its X-Forwarded-For read
from the right: the first address that is not itself a trusted proxy is the client (entries
further left are whatever the client sent and are never believed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(spec: str) -> tuple[Network, ...]:
    """`LINJERUM_TRUSTED_PROXIES`: comma-separated addresses or CIDR blocks."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    )


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str, networks: Sequence[Network]) -> str | None:
    if peer is None or not _trusted(peer, networks):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def behind_proxies(networks: Sequence[Network]) -> Middleware:
    """A middleware giving handlers the client's address as `request.remote`."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = client_address(
            request.remote, request.headers.get("X-Forwarded-For", ""), networks
        )
        if client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)

    return forwarded
