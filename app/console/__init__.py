"""The operator console: server-rendered pages at /console for admin and moderator keys.

A thin layer over the services the admin API uses. Every script, style and image it needs is a
file of this package (static/), so it works offline and tells no third party about its pages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mounts the console's files and pages on ``app``, and sends people who open /, /admin or /dashboard there."""
    from app.console import accounts, auth, billing, jobs, licenses, moderation, overview, plans, usage
    from app.console.routing import console_router
    from app.console.session import current_session

    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    for module in (auth, overview, accounts, plans, usage, billing, licenses, moderation, jobs):
        app.include_router(module.router)

    fallback = console_router()

    @fallback.get("/{rest:path}")
    async def not_found(request: Request, rest: str) -> Response:
        from app.console.render import error_page

        return error_page(request, 404, "No such page", f"The console has no page at /console/{rest}.",
                          operator=None, session=await current_session(request))

    app.include_router(fallback)

    async def to_console(request: Request) -> RedirectResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{root}/console/", status_code=307)

    for path in ("/", "/admin", "/dashboard"):
        app.add_api_route(path, to_console, methods=["GET"], include_in_schema=False)
