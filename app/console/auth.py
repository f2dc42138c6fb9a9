"""Signing in with an admin or moderator key, and out again."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from app.accounts import service as accounts
from app.accounts.service import Principal
from app.admin import service as admin
from app.console.common import context
from app.console.forms import text
from app.console.render import render
from app.console.routing import console_router, redirect, safe_next
from app.console.session import (
    CheckedForm,
    ConsoleSession,
    SignedIn,
    SignInRequired,
    current_session,
    may_sign_in,
    signed_in,
)
from app.errors import AppError, PermissionDenied
from app.kit.clock import utcnow

log = logging.getLogger("ponyserve.console")

router = console_router()


def landing(principal: Principal) -> str:
    """Where a key starts: the overview for admins, the review queue for moderators."""
    return "/console/" if principal.has_scope("admin") else "/console/moderation/reviews"


@router.get("/login")
async def login_page(request: Request,
                     next_: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
                     signed_out: Annotated[bool, Query()] = False) -> Response:
    session = await current_session(request)
    if session.key_id is not None:
        try:
            operator = await signed_in(request)
        except SignInRequired:
            session.key_id = session.signed_in_at = None
        else:
            return redirect(request, safe_next(next_) or landing(operator.principal))
    if signed_out:
        session.say("You are signed out.")
    return render(request, "login.html", {"next": safe_next(next_) or ""}, operator=None, session=session)


def _refusal(exc: AppError) -> str:
    if exc.code == "generate_only":
        return exc.message
    return "That key cannot sign in: it is unknown, revoked, or its account is suspended."


@router.post("/login")
async def login(request: Request, form: CheckedForm) -> Response:
    """Checks the key once, by its secret, like any API call; from then on the session holds only its id."""
    session = await current_session(request)
    target = safe_next(text(form, "next"))
    token = text(form, "key")
    try:
        async with context(request).db.unit_of_work() as db_session:
            principal = await accounts.authenticate(db_session, token)
            if not may_sign_in(principal):
                raise PermissionDenied("Generate-only keys cannot sign in: the console is for admin and moderator "
                                       "keys.", code="generate_only")
            await admin.record_sign_in(db_session, principal)
    except AppError as exc:
        log.info("console sign-in refused", extra={"code": exc.code})
        session.say(_refusal(exc), "error")
        return render(request, "login.html", {"next": target or ""}, operator=None, session=session,
                      status_code=exc.status_code)
    # A fresh session (new form token) on sign-in: nothing set before it carries over.
    fresh = ConsoleSession(key_id=principal.key.id, signed_in_at=time.time())
    request.state.console_session = fresh
    return redirect(request, target or landing(principal))


@router.post("/logout")
async def logout(request: Request, operator: SignedIn, _form: CheckedForm) -> Response:
    async with context(request).db.unit_of_work() as db_session:
        await admin.record_sign_out(db_session, operator.principal, utcnow())
    operator.session.ended = True
    return redirect(request, "/console/login", signed_out="1")
