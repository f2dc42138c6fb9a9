"""Pure ASGI middleware: request ids, the body-size cap, latency metrics and the request log line."""

from __future__ import annotations

import json
import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.observability.logging import request_id_var
from app.observability.metrics import REQUEST_LATENCY

log = logging.getLogger("ponyserve.http")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _BodyTooLarge(Exception):
    pass


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Routes whose bodies are legitimately larger (Stripe events, CSV imports).
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or secrets.token_hex(8)
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject_too_large(send, rid, limit)
            self._observe(scope, 413, started)
            request_id_var.reset(token)
            return

        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if too_large:
                # A chunked body (no Content-Length) overflows while the app reads it, and FastAPI turns
                # any error raised there into "400 error parsing the body". Whatever the app answers
                # then, the caller gets the 413 the overflow deserves.
                if message["type"] == "http.response.start" and not response_started:
                    status, response_started = 413, True
                    await self._reject_too_large(send, rid, limit)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            if not response_started:
                status = 413
                await self._reject_too_large(send, rid, limit)
        finally:
            self._observe(scope, status, started)
            request_id_var.reset(token)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        # A client picks the method: anything but the standard ones is one label, not one each.
        method = scope["method"] if scope["method"] in _METHODS else "other"
        REQUEST_LATENCY.labels(template, method, str(status)).observe(elapsed)
        if template not in ("/metrics", "/healthz", "/readyz"):
            log.info("request", extra={"method": method, "route": template, "status": status,
                                       "ms": round(elapsed * 1000, 2)})

    async def _reject_too_large(self, send: Send, rid: str, limit: int) -> None:
        body = json.dumps(PayloadTooLarge(f"Request body exceeds {limit} bytes.").body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", rid.encode("latin-1"))]})
        await send({"type": "http.response.body", "body": body})
