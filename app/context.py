"""What a running API process holds: built once at start-up, handed to routes as a dependency."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.db import Database
from app.generation.catalog import ModelCatalog
from app.generation.presentation import Presenter
from app.moderation.service import Moderator
from app.observability.fleet import FleetSnapshot
from app.queue.notify import JobEvents
from app.storage.base import ImageStore


@dataclass
class AppContext:
    settings: Settings
    db: Database
    catalog: ModelCatalog
    events: JobEvents
    store: ImageStore
    presenter: Presenter
    fleet: FleetSnapshot
    moderation: Moderator


def _context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(_context)]


def base_url(request: Request) -> str:
    """The base (ending in "/") of every link handed out in answer to ``request``.

    PONYSERVE_PUBLIC_URL when set; else what a trusted proxy forwarded; else the address of the
    socket the request arrived on. Never the Host header: a caller could point links anywhere.
    """
    settings: Settings = request.app.state.ctx.settings
    root = request.scope.get("root_path", "").rstrip("/")
    if settings.public_url:
        return f"{settings.public_url}{root}/"
    forwarded = _forwarded_origin(request, settings.trusted_proxies)
    if forwarded is not None:
        return f"{forwarded}{root}/"
    return f"{_local_origin(request, settings)}{root}/"


# A host[:port] as a link may carry it: a name or IPv4 address, or a bracketed IPv6 address.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def _local_origin(request: Request, settings: Settings) -> str:
    scheme = "https" if request.url.scheme == "https" else "http"
    server = request.scope.get("server")
    if server and server[0]:
        host, port = str(server[0]), server[1]
    else:
        host, port = settings.host, settings.port
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{port}"


def _trusted(client_host: str | None, proxies: list[str]) -> bool:
    if not client_host or not proxies:
        return False
    try:
        address = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(p, strict=False) for p in proxies)


def _forwarded_origin(request: Request, proxies: list[str]) -> str | None:
    """scheme://host from a trusted proxy's headers, or None (untrusted peer, or nothing usable)."""
    if not _trusted(request.client.host if request.client else None, proxies):
        return None
    proto, host = _from_forwarded(request.headers.get("forwarded", ""))
    # The last value is the one our (trusted) proxy added; earlier ones came from further out.
    proto = proto or _last(request.headers.get("x-forwarded-proto", ""))
    host = host or _last(request.headers.get("x-forwarded-host", ""))
    if not host or not _HOST_RE.match(host):
        return None
    return f"{'https' if proto.lower() == 'https' else 'http'}://{host}"


def _last(header: str) -> str:
    return header.rsplit(",", 1)[-1].strip()


def _from_forwarded(header: str) -> tuple[str, str]:
    """proto and host of the last element of an RFC 7239 Forwarded header."""
    proto = host = ""
    for pair in _last(header).split(";"):
        name, _, value = pair.partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "proto":
            proto = value
        elif name.strip().lower() == "host":
            host = value
    return proto, host
