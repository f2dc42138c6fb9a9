"""Signed, expiring image URLs, so ``response_format=url`` works without the caller's key.

The secret lives in the database (``system_meta``) so every API replica signs and
verifies alike without extra configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.meta import SystemMeta

_SECRET_KEY = "url_signing_secret"


async def load_or_create_secret(session: AsyncSession) -> bytes:
    row = await session.get(SystemMeta, _SECRET_KEY)
    if row is None:
        row = SystemMeta(key=_SECRET_KEY, value=secrets.token_hex(32))
        session.add(row)
        await session.flush()
    return bytes.fromhex(row.value)


class UrlSigner:
    def __init__(self, secret: bytes, ttl_seconds: int = 3600) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def _sig(self, image_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{image_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def query(self, image_id: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl_seconds)
        return f"expires={expires}&sig={self._sig(image_id, expires)}"

    def verify(self, image_id: str, expires: int, sig: str, now: float | None = None) -> bool:
        """True for an unexpired link with our signature; False for anything else, malformed input included."""
        if expires < (now if now is not None else time.time()):
            return False
        # compare_digest raises TypeError on a non-ASCII str; a signature we made is always ASCII hex,
        # so anything else is simply wrong (401), never a 500.
        if not sig.isascii():
            return False
        return hmac.compare_digest(self._sig(image_id, expires), sig)
