"""Pure ASGI middleware for response hygiene: security headers on every response, and the error
boundary that turns an unexpected exception into one logged 500 instead of a leaked traceback."""

from __future__ import annotations

import contextlib
import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import unexpected_error_response

log = logging.getLogger("ponyserve.http")

# Every response: no MIME sniffing, no Referer leaking signed image URLs, never framed.
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# JSON and image bytes never need to load anything. HTML pages (/docs, /redoc) run inline scripts
# and styles, but load nothing from elsewhere: ReDoc's sidebar logo, fetched from cdn.redoc.ly,
# is refused (ReDoc then hides it), so a reader's browser tells no third party about the page.
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_HTML_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
             b"img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
             b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
BEARER_CHALLENGE = b'Bearer realm="ponyserve"'


def _needs_no_store(scope: Scope) -> bool:
    """Admin answers and anything answered to a credential may carry secrets (new keys, webhook
    secrets) or one customer's data: no shared or browser cache may keep them."""
    if scope["path"].startswith("/admin"):
        return True
    return any(name == b"authorization" for name, _ in scope["headers"])


def _with_security_headers(headers: list[tuple[bytes, bytes]], status: int, no_store: bool
                           ) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    added = [(name, value) for name, value in _ALWAYS if name not in present]
    if b"content-security-policy" not in present:
        content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
        added.append((b"content-security-policy", _HTML_CSP if content_type.startswith(b"text/html") else _API_CSP))
    # A route that chose its own caching (image bytes: private, max-age) keeps it.
    if no_store and b"cache-control" not in present:
        added.append((b"cache-control", b"no-store"))
    # RFC 9110: a 401 must say how to authenticate; one place covers every route that raises it.
    if status == 401 and b"www-authenticate" not in present:
        added.append((b"www-authenticate", BEARER_CHALLENGE))
    return [*headers, *added]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = _needs_no_store(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(list(message.get("headers", [])), message["status"],
                                                            no_store)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ErrorBoundaryMiddleware:
    """Catches what no exception handler consumed, inside the request middleware.

    Starlette's outermost ServerErrorMiddleware would render it too, but only after the request
    middleware has reset the request id (so the log line has none, nor the response its
    X-Request-ID), and then re-raises it for uvicorn to log a second time. Here the exception is
    logged once, with the request id, and consumed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if not started:
                response = unexpected_error_response(Request(scope), exc)
                await response(scope, receive, send)
                return
            # Too late for a 500 (a stream was under way): log it, then end the body so the
            # server does not report an unfinished response as a second error.
            log.error("unhandled error after the response started", exc_info=exc)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
