"""What every console page handler shares: the process context, changes that end in a redirect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.console.routing import redirect
from app.console.session import Operator
from app.context import AppContext
from app.errors import AppError
from app.kit.bounds import INT64_MAX

PAGE_SIZE = 50

Offset = Annotated[int, Query(ge=0, le=INT64_MAX)]


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


@dataclass(frozen=True)
class Done:
    """What a change says when it worked, and where the browser goes next (default: back)."""

    message: str
    path: str | None = None
    params: dict[str, Any] | None = None


async def change(request: Request, operator: Operator, back: str,
                 work: Callable[[AsyncSession], Awaitable[Done]], *,
                 after_commit: Callable[[], Awaitable[None]] | None = None) -> Response:
    """Runs ``work`` in one transaction and answers with a redirect (so a reload repeats nothing):
    to where ``work`` says on success, with its message; back to ``back`` with the refusal otherwise."""
    try:
        async with context(request).db.unit_of_work() as session:
            done = await work(session)
    except AppError as exc:
        operator.session.say(exc.message, "error")
        return redirect(request, back)
    if after_commit is not None:
        await after_commit()
    operator.session.say(done.message)
    return redirect(request, done.path or back, **(done.params or {}))


def blank_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None
