"""Writes the billing outbox in the ledger's own transaction, and names each meter event.

Billable = a ledger row generated on a paid plan (``plan_paid``, the plan at generation time)
for an account linked to a Stripe customer when the row is written. Usage from before the link
is never billed to Stripe: it happened outside any subscription. It stays in the ledger and
reconciliation counts it as ``unbilled_before_link``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.billing.models import BillingOutbox, OutboxStatus
from app.db import dialect_insert
from app.kit.clock import utcnow
from app.kit.meta import SystemMeta
from app.metering.models import UsageEntry

_INSTALLATION_KEY = "billing_installation_id"


async def enqueue_billable(session: AsyncSession, entries: Sequence[UsageEntry]) -> int:
    """Adds one pending outbox row per billable ledger row (ids already flushed); returns how many."""
    paid = [e for e in entries if e.plan_paid]
    if not paid:
        return 0
    accounts = {e.account_id for e in paid}
    linked = dict((await session.execute(
        select(Account.id, Account.stripe_customer_id)
        .where(Account.id.in_(accounts), Account.stripe_customer_id.is_not(None))
    )).tuples().all())
    now = utcnow()
    rows = [
        {"usage_id": e.id, "account_id": e.account_id, "stripe_customer_id": linked[e.account_id],
         "value": e.images, "occurred_at": e.created_at, "status": OutboxStatus.PENDING.value, "attempts": 0,
         "failures": 0, "next_attempt_at": e.created_at, "created_at": now}
        for e in paid if linked.get(e.account_id)
    ]
    if rows:
        await session.execute(insert(BillingOutbox), rows)
    return len(rows)


async def installation_id(session: AsyncSession) -> str:
    """A random id of this deployment's database, created once, part of every meter event identifier."""
    insert_ = dialect_insert(session)
    await session.execute(insert_(SystemMeta).values(key=_INSTALLATION_KEY, value=secrets.token_hex(6))
                          .on_conflict_do_nothing())
    row = await session.get(SystemMeta, _INSTALLATION_KEY, populate_existing=True)
    assert row is not None
    return row.value


def identifier(prefix: str, installation: str, usage_id: int) -> str:
    """The meter event's identifier: one per ledger row, unique across deployments (≤ 100 characters)."""
    return f"{prefix}-{installation}-{usage_id}"
