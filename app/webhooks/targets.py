"""Where a webhook may be sent: never to this network's own machines unless the operator says so.

A partner-supplied URL is a request the service makes on the partner's behalf from inside the
operator's network (server-side request forgery). So a target must resolve only to globally
routable addresses — no loopback, private, shared (CGNAT), link-local (cloud metadata lives at
169.254.169.254 and fd00:ec2::254), multicast or reserved ones — checked at registration and again
at every delivery, after DNS resolution, and the connection then goes to the address that was
checked (so a DNS answer that changes between check and connect cannot redirect it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# A resolver that does not answer must not hold a registration (or a dispatcher slot) for long.
RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """The URL is not a target the service will send to; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: where it resolved, and the parts a pinned connection needs."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (the Host header keeps the name)."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.scheme}://{host}:{self.port}{path}{query}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable webhook URL, or TargetRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"The URL is malformed ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("The URL must start with https:// (or http://).")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("The URL must not carry credentials; authenticate deliveries with the signature.")
    if parts.fragment:
        raise TargetRefused("The URL must not have a fragment.")
    host = parts.hostname
    if not host:
        raise TargetRefused("The URL has no host.")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def refusal(address: IPAddress) -> str | None:
    """Why an address is not a public one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "an address that is not publicly routable"
    return None


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Checks ``url`` and resolves its host; every address it resolves to must be public (unless
    ``allow_private``), and the first one is the one to connect to."""
    scheme, host, port = parse(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, TimeoutError) as exc:
            raise TargetRefused(f"The host '{host}' could not be resolved ({exc or 'timed out'}).") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise TargetRefused(f"The host '{host}' has no address.")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                raise TargetRefused(f"The host '{host}' resolves to {address}, {reason}; webhooks go only to public "
                                    "addresses.")
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
