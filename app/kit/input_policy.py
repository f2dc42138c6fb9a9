"""Pure ASGI check: the text policy (app.kit.text) for the request path and query string.

Body fields are checked by their models; path ids and query filters reach the database too
(``WHERE id = '…\\x00'`` is a Postgres error, so a 500). One check before routing covers every
route, present and future, instead of a validator on each parameter.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import InvalidRequest
from app.kit.text import forbidden_character


def _offending(scope: Scope) -> str | None:
    """'path' or 'query' when that part holds a refused character once percent-decoded."""
    # scope["path"] is already percent-decoded; decode the raw query string the same way.
    if forbidden_character(scope.get("path", "")) is not None:
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    if forbidden_character(unquote(query.replace("+", " "), errors="replace")) is not None:
        return "query"
    return None


class InputPolicyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        part = scope["type"] == "http" and _offending(scope)
        if not part:
            await self.app(scope, receive, send)
            return
        err = InvalidRequest(f"The request {part} contains a control character.", code="invalid_characters",
                             param=part)
        body = json.dumps(err.body()).encode()
        await send({"type": "http.response.start", "status": err.status_code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
