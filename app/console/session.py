"""The console's sign-in session: one encrypted cookie, re-checked against the database on every request.

The cookie holds the signed-in key's id (never its secret), when the sign-in happened, the form
token (CSRF) and one-time messages for the next page. It is encrypted and authenticated (Fernet,
under a key derived from the deployment's own secret in ``system_meta``), so every replica reads it
and nobody can forge or read it. Fernet's timestamp is the last request's: a session left alone
for ``IDLE_SECONDS`` is over, and re-issuing the cookie on each page keeps an active one alive,
up to ``MAX_SESSION_SECONDS`` after sign-in.

On every request the key is looked up again: revoked, its account suspended, its scopes no longer
admin or moderator, or signed out since (the sign-out is recorded in the database, so a copy of the
cookie dies with it) — and the session is over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from app.accounts import service as accounts
from app.accounts.service import Principal
from app.admin import service as admin
from app.context import AppContext, base_url
from app.errors import AppError
from app.storage.signing import load_or_create_secret

COOKIE_NAME = "ponyserve_console"
COOKIE_PATH = "/console"
# Short on purpose: an unattended browser with an admin session is the risk being bounded.
IDLE_SECONDS = 30 * 60
MAX_SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
# Scopes that may sign in; a generate-only key is a partner's, not an operator's.
CONSOLE_SCOPES = ("admin", "moderator")


class SignInRequired(Exception):
    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "sign in required")
        self.reason = reason


class CsrfRejected(Exception):
    pass


class ScopeRefused(Exception):
    def __init__(self, needed: str) -> None:
        super().__init__(needed)
        self.needed = needed


@dataclass
class ConsoleSession:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    key_id: str | None = None
    signed_in_at: float | None = None
    # (kind, text) shown once on the next page: info, error.
    flash: list[tuple[str, str]] = field(default_factory=list)
    # A new key's secret, shown once on the next page of its account and then dropped.
    new_key: dict[str, str] | None = None
    # Set when the response must not carry the session on (sign-out).
    ended: bool = False

    def to_json(self) -> bytes:
        return json.dumps({"c": self.csrf, "k": self.key_id, "t": self.signed_in_at, "f": self.flash,
                           "n": self.new_key}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ConsoleSession:
        data: dict[str, Any] = json.loads(raw)
        return cls(csrf=str(data["c"]), key_id=data.get("k"), signed_in_at=data.get("t"),
                   flash=[(str(kind), str(text)) for kind, text in data.get("f") or []], new_key=data.get("n"))

    def say(self, text: str, kind: str = "info") -> None:
        self.flash.append((kind, text))

    def take_flash(self) -> list[tuple[str, str]]:
        shown, self.flash = self.flash, []
        return shown

    def take_new_key(self) -> dict[str, str] | None:
        shown, self.new_key = self.new_key, None
        return shown


class SessionCodec:
    def __init__(self, deployment_secret: bytes) -> None:
        # Its own key, derived: the image-URL signing secret itself never signs anything else.
        derived = hmac.new(deployment_secret, b"ponyserve console session v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encode(self, session: ConsoleSession, now: float | None = None) -> str:
        return self._fernet.encrypt_at_time(session.to_json(), int(now if now is not None else time.time())).decode()

    def decode(self, raw: str, now: float | None = None) -> ConsoleSession | None:
        """The session, or None when the cookie is forged, damaged or idle for longer than IDLE_SECONDS."""
        try:
            data = self._fernet.decrypt_at_time(raw.encode(), IDLE_SECONDS,
                                                int(now if now is not None else time.time()))
            return ConsoleSession.from_json(data)
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None


async def _codec(request: Request) -> SessionCodec:
    codec: SessionCodec | None = getattr(request.app.state, "console_codec", None)
    if codec is None:
        ctx: AppContext = request.app.state.ctx
        async with ctx.db.unit_of_work() as session:
            codec = SessionCodec(await load_or_create_secret(session))
        request.app.state.console_codec = codec
    return codec


async def current_session(request: Request) -> ConsoleSession:
    """This request's session: the cookie's, or a new anonymous one (which carries a form token too,
    so the sign-in form itself is protected)."""
    cached: ConsoleSession | None = getattr(request.state, "console_session", None)
    if cached is not None:
        return cached
    raw = request.cookies.get(COOKIE_NAME)
    found = (await _codec(request)).decode(raw) if raw else None
    session = found or ConsoleSession()
    request.state.console_session = session
    return session


def _secure(request: Request) -> bool:
    return base_url(request).startswith("https://")


async def write_cookie(request: Request, response: Response) -> None:
    """Re-issues the session cookie (its timestamp restarts the idle clock), or clears it after sign-out."""
    session: ConsoleSession | None = getattr(request.state, "console_session", None)
    if session is None:
        return
    if session.ended:
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, secure=_secure(request), httponly=True,
                               samesite="strict")
        return
    value = (await _codec(request)).encode(session)
    response.set_cookie(COOKIE_NAME, value, max_age=IDLE_SECONDS, path=COOKIE_PATH, secure=_secure(request),
                        httponly=True, samesite="strict")


@dataclass(frozen=True)
class Operator:
    """The signed-in key, checked on this request, and what it may open."""

    principal: Principal
    session: ConsoleSession

    @property
    def is_admin(self) -> bool:
        return self.principal.has_scope("admin")

    @property
    def is_moderator(self) -> bool:
        # Moderation pages are open to admin keys too: an admin can mint a moderator key anyway.
        return self.principal.has_scope("moderator") or self.is_admin


def may_sign_in(principal: Principal) -> bool:
    return any(principal.has_scope(scope) for scope in CONSOLE_SCOPES)


async def signed_in(request: Request) -> Operator:
    session = await current_session(request)
    if session.key_id is None or session.signed_in_at is None:
        raise SignInRequired()
    if time.time() - session.signed_in_at > MAX_SESSION_SECONDS:
        raise SignInRequired("Your session reached its maximum length; sign in again.")
    ctx: AppContext = request.app.state.ctx
    async with ctx.db.unit_of_work() as db_session:
        try:
            principal = await accounts.principal_for_key_id(db_session, session.key_id)
        except AppError as exc:
            raise SignInRequired(f"Signed out: {exc.message}") from None
        signed_out = await admin.console_signed_out_at(db_session, session.key_id)
    if signed_out is not None and signed_out.timestamp() >= session.signed_in_at:
        raise SignInRequired("You signed out; sign in again.")
    if not may_sign_in(principal):
        raise SignInRequired("This key no longer has the admin or moderator scope.")
    request.state.account_id = principal.account.id
    return Operator(principal=principal, session=session)


async def admin_operator(operator: Annotated[Operator, Depends(signed_in)]) -> Operator:
    if not operator.is_admin:
        raise ScopeRefused("admin")
    return operator


async def moderation_operator(operator: Annotated[Operator, Depends(signed_in)]) -> Operator:
    if not operator.is_moderator:
        raise ScopeRefused("moderator")
    return operator


async def checked_form(request: Request) -> FormData:
    """The posted form, once its token matches this session's; anything else is refused (403)."""
    session = await current_session(request)
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRejected()
    return form


SignedIn = Annotated[Operator, Depends(signed_in)]
AdminOperator = Annotated[Operator, Depends(admin_operator)]
ModerationOperator = Annotated[Operator, Depends(moderation_operator)]
CheckedForm = Annotated[FormData, Depends(checked_form)]
