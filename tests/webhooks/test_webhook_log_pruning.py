"""The delivery log keeps a month: older finished deliveries and their messages are pruned, pending ones never."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.accounts.models import Account, Plan
from app.db import Database
from app.kit.clock import utcnow
from app.webhooks import deliveries
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage


async def test_old_finished_deliveries_are_pruned_and_pending_ones_kept(pg_factory) -> None:  # type: ignore[no-untyped-def]
    db = Database(pg_factory())
    now, old = utcnow(), utcnow() - timedelta(days=40)
    try:
        async with db.unit_of_work() as session:
            plan = (await session.execute(select(Plan).where(Plan.code == "free"))).scalar_one()
            session.add(Account(id="acct_prune", name="p", plan_id=plan.id))
            await session.flush()
            session.add(WebhookEndpoint(id="we_1", account_id="acct_prune", url="https://1.1.1.1/", secret="whsec_x",
                                        created_at=old))
            for name, status, created in [("old_done", "succeeded", old), ("old_failed", "failed", old),
                                          ("old_pending", "pending", old), ("new_done", "succeeded", now)]:
                session.add(WebhookMessage(id=f"msg_{name}", account_id="acct_prune", job_id=f"gen_{name}", job_seq=1,
                                           type="generation.succeeded", body="{}", created_at=created))
                await session.flush()
                session.add(WebhookDelivery(id=f"whd_{name}", message_id=f"msg_{name}", endpoint_id="we_1",
                                            job_id=f"gen_{name}", job_seq=1, status=status, next_attempt_at=created,
                                            created_at=created))
                await session.flush()
                session.add(WebhookAttempt(id=f"wha_{name}", delivery_id=f"whd_{name}", attempted_at=created,
                                           status_code=200, duration_ms=1))
        async with db.unit_of_work() as session:
            assert await deliveries.prune(session, now - timedelta(days=30)) == 2
        async with db.unit_of_work() as session:
            kept = set((await session.execute(select(WebhookDelivery.id))).scalars())
            messages = set((await session.execute(select(WebhookMessage.id))).scalars())
            attempts = set((await session.execute(select(WebhookAttempt.id))).scalars())
        assert kept == {"whd_old_pending", "whd_new_done"}
        assert messages == {"msg_old_pending", "msg_new_done"}
        assert attempts == {"wha_old_pending", "wha_new_done"}
    finally:
        await db.dispose()
