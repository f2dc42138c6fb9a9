"""The first admin key of a fresh deployment, created once and shown once."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.repository import key_by_id
from app.accounts.service import create_account, create_key
from app.kit.meta import SystemMeta

_MARKER = "bootstrap_admin_key_id"


async def ensure_bootstrap_admin(session: AsyncSession) -> str | None:
    """Creates the operator account and an all-scopes key if this database never had one.

    Returns the clear key the one time it is created, None on every later start. The
    marker row (not "is there an admin key?") decides, so revoking that key never
    makes a restart print a new one.
    """
    if await session.get(SystemMeta, _MARKER) is not None:
        return None
    try:
        async with session.begin_nested():
            session.add(SystemMeta(key=_MARKER, value="pending"))
            await session.flush()
    except IntegrityError:
        return None  # another replica bootstrapped at the same moment
    account = await create_account(session, name="operator", plan_code="internal")
    key, token = await create_key(session, account_id=account.id, name="bootstrap admin",
                                  scopes=["admin", "generate", "moderator"])
    marker = await session.get(SystemMeta, _MARKER)
    assert marker is not None
    marker.value = key.id
    return token


async def operator_account_id(session: AsyncSession) -> str | None:
    """The account the bootstrap admin key was made for (the operator's own), or None before bootstrap.

    Found through the marker, not the key: it still names the account after that key was revoked or
    lost, which is when an operator needs a new admin key there.
    """
    marker = await session.get(SystemMeta, _MARKER)
    if marker is None or marker.value == "pending":
        return None
    key = await key_by_id(session, marker.value)
    return key.account_id if key is not None else None
