"""How a console route answers when something stands in its way: pages for people, not JSON.

The API's errors are JSON (DESIGN § Errors); a person in a browser gets the same message as a
page, a sign-in form when the session is over, and the session cookie re-issued on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response

from app.console.render import error_page, link
from app.console.session import CsrfRejected, ScopeRefused, SignInRequired, current_session, write_cookie
from app.errors import AppError, is_database_unavailable

log = logging.getLogger("ponyserve.console")


def safe_next(target: str | None) -> str | None:
    """A path inside the console to return to after sign-in; anything else (another host, //evil) is dropped."""
    if not target or not target.startswith("/console/") or target.startswith("//") or "\\" in target:
        return None
    return target


def to_sign_in(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or safe_next(target) is None:
        target = "/console/"
    return RedirectResponse(link(request, "/console/login") + f"?next={quote(target, safe='')}", status_code=303)


def redirect(request: Request, path: str, **params: Any) -> Response:
    """After a change: back to a page by GET (a reload then repeats nothing)."""
    return RedirectResponse(link(request, path, **params), status_code=303)


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                session = await current_session(request)
                session.key_id = session.signed_in_at = None
                if exc.reason:
                    session.say(exc.reason, "error")
                response = to_sign_in(request)
            except CsrfRejected:
                response = error_page(request, 403, "Form refused",
                                      "This form was not sent with its security token (or the token is from an "
                                      "older session). Nothing was changed: reload the page and try again.",
                                      operator=None, session=await current_session(request))
            except ScopeRefused as exc:
                response = error_page(request, 403, "Not for this key",
                                      f"This page needs a key with the '{exc.needed}' scope. Moderator keys open "
                                      "the moderation pages only.", operator=None,
                                      session=await current_session(request))
            except AppError as exc:
                response = error_page(request, exc.status_code, "Could not do that", exc.message, operator=None,
                                      session=await current_session(request))
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
                response = error_page(request, 400, "Invalid address",
                                      f"'{where}': {first.get('msg', 'invalid value')}." if where else
                                      "The address has an invalid value.", operator=None,
                                      session=await current_session(request))
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                response = error_page(request, 503, "Database unavailable",
                                      "The database cannot be reached right now; try again in a moment.",
                                      operator=None, session=await current_session(request))
            await write_cookie(request, response)
            return response

        return route


def console_router() -> APIRouter:
    # HTML pages, not API: kept out of /openapi.json (and so out of generated clients and the fuzzer).
    return APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
