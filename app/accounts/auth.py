"""The authentication dependency and scope checks used by every protected route."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from app.accounts.service import Principal, authenticate
from app.db import Database
from app.errors import PermissionDenied

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
# AUTOMATIC1111 clients only know Basic auth: the key travels as the password.
_basic = HTTPBasic(auto_error=False, description="API key as the Basic-auth password (A1111 clients)")


def _token_from(request: Request, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    if bearer is not None:
        return bearer.credentials
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        _basic_creds: Annotated[HTTPBasicCredentials | None, Security(_basic)],
    ) -> Principal:
        # Its own short transaction: a synchronous generation may wait minutes, and must not
        # hold a pooled connection all that time just because it authenticated.
        db: Database = request.app.state.db
        async with db.unit_of_work() as session:
            principal = await authenticate(session, _token_from(request, bearer))
        if not principal.has_scope(scope):
            raise PermissionDenied(f"This key lacks the '{scope}' scope.", code="missing_scope")
        request.state.account_id = principal.account.id
        return principal

    return dependency


GenerateCaller = Annotated[Principal, Depends(require_scope("generate"))]
AdminCaller = Annotated[Principal, Depends(require_scope("admin"))]
ModeratorCaller = Annotated[Principal, Depends(require_scope("moderator"))]
