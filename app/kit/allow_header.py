"""Pure ASGI fix-up: a 405's ``Allow`` lists every method of the path, not just one route's.

Starlette answers 405 from the first route whose path matches, and that route only knows its own
methods; ``GET|PATCH /admin/accounts/{id}`` are two routes, so ``PUT`` there was told "Allow: GET".
RFC 9110 §15.5.6 asks for all of them. Routes can't see their siblings, the application can, so
the header is rebuilt here from the application's OpenAPI document, once, for every router.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Per application: (path regex, template parameter count, methods) from its OpenAPI document, built on the first 405.
_Table = list[tuple[re.Pattern[str], int, set[str]]]
_TABLES: weakref.WeakKeyDictionary[Any, _Table] = weakref.WeakKeyDictionary()


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join(
        (".+" if part.endswith(":path}") else "[^/]+") if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{pattern}$")


def _table(app: Any) -> _Table:
    # The OpenAPI document is the public, router-agnostic list of every path and its methods
    # (FastAPI's included routers are internal objects that change between releases).
    table = _TABLES.get(app)
    if table is None:
        paths = app.openapi().get("paths", {}) if hasattr(app, "openapi") else {}
        table = [(_template_regex(path), path.count("{"), {m.upper() for m in item if m in _METHODS})
                 for path, item in paths.items()]
        _TABLES[app] = table
    return table


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method the OpenAPI document of ``app`` lists for ``path``.

    As OpenAPI matches URLs, the most concrete templates win: ``/v1/images/generations`` is that
    path's, not ``/v1/images/{image_id}``'s, though the latter's pattern matches it too.
    """
    matching = [(params, methods) for regex, params, methods in _table(app) if regex.match(path)]
    if not matching:
        return []
    fewest = min(params for params, _ in matching)
    return sorted(set().union(*(methods for params, methods in matching if params == fewest)))


class AllowHeaderMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = allowed_methods(scope.get("app"), scope["path"])
                if methods:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    message = {**message, "headers": [*headers, (b"allow", ", ".join(methods).encode("latin-1"))]}
            await send(message)

        await self.app(scope, receive, send_wrapper)
