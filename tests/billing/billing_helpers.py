"""Billing test plumbing: paid accounts, ledger rows through the real append path, signed webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fake_stripe import API_KEY, FakeStripe
from harness import make_settings
from sqlalchemy import func, select

from app.accounts import service as accounts
from app.accounts.models import Plan
from app.billing.models import BillingOutbox, OutboxStatus
from app.billing.reporter import BillingReporter
from app.config import Settings
from app.db import Database
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.metering import repository as ledger
from app.metering.service import ledger_rows
from app.queue.models import Job, JobOutput, JobStatus

WEBHOOK_SECRETS = ("whsec_previous_" + "a" * 24, "whsec_current_" + "b" * 24)


def billing_settings(database_url: str, data_dir: Path, fake: FakeStripe, *, demo_model_dir: Path | None = None,
                     **overrides: Any) -> Settings:
    """Settings wired to the fake Stripe, with short timeouts and backoffs (the demo model only for servers)."""
    values: dict[str, Any] = {
        "stripe_secret_key": API_KEY, "stripe_api_base": fake.url, "stripe_webhook_secrets": list(WEBHOOK_SECRETS),
        "stripe_timeout_seconds": 0.5, "billing_retry_base_seconds": 0.05, "billing_retry_max_seconds": 0.4,
        "billing_reporter_idle_seconds": 0.1, "billing_reporter_lease_seconds": 30.0,
        "billing_metrics_refresh_seconds": 0.3, **overrides,
    }
    return make_settings(database_url, data_dir, demo_model_dir or data_dir / "models" / "demo", **values)


async def paid_account(db: Database, *, customer: str | None = None, plan_code: str | None = None,
                       paid: bool = True) -> tuple[str, str]:
    """A fresh account on a (new) paid plan with a key; linked to ``customer`` when given. (account, key)."""
    code = plan_code or f"pro-{secrets.token_hex(3)}"
    async with db.unit_of_work() as session:
        if await session.scalar(select(func.count()).select_from(Plan).where(Plan.code == code)) == 0:
            await accounts.create_plan(session, {"code": code, "name": code, "max_width": 1024, "max_height": 1024,
                                                 "max_steps": 50, "max_n": 4, "priority": 0, "is_paid": paid})
        account = await accounts.create_account(session, name=f"acct-{code}", plan_code=code)
        key, _ = await accounts.create_key(session, account_id=account.id)
        if customer is not None:
            account.stripe_customer_id, account.stripe_linked_at = customer, utcnow()
        return account.id, key.id


async def link(db: Database, account_id: str, customer: str) -> None:
    async with db.unit_of_work() as session:
        account = await accounts.get_account(session, account_id)
        account.stripe_customer_id, account.stripe_linked_at = customer, utcnow()


async def add_usage(db: Database, account_id: str, key_id: str, n: int, *, at: datetime | None = None,
                    plan_paid: bool = True) -> list[int]:
    """``n`` delivered images as one finished job, metered through metering.repository.append."""
    now = at or utcnow()
    async with db.unit_of_work() as session:
        job = Job(id=new_id("job"), account_id=account_id, api_key_id=key_id, status=JobStatus.SUCCEEDED,
                  model="demo", license=None, prompt="p", revised_prompt="p", width=64, height=64, steps=1,
                  guidance_scale=1.0, sampler="Euler a", seed=1, n=n, output_format="png", batch_key="k",
                  plan_code="pro", plan_paid=plan_paid, created_at=now, finished_at=now)
        session.add(job)
        await session.flush()
        outputs = [JobOutput(id=new_id("img"), job_id=job.id, index=i, seed=i, format="png", width=64, height=64,
                             storage_key=f"test/{job.id}/{i}", size_bytes=1, sha256="0" * 64, created_at=now)
                   for i in range(n)]
        session.add_all(outputs)
        await session.flush()
        entries = ledger_rows(job, outputs, gpu_seconds=0.01 * n, now=now, period_day=now.date())
        await ledger.append(session, entries)
        return [e.id for e in entries]


async def outbox_counts(db: Database, account_id: str | None = None) -> dict[str, int]:
    async with db.unit_of_work() as session:
        stmt = select(BillingOutbox.status, func.count()).group_by(BillingOutbox.status)
        if account_id is not None:
            stmt = stmt.where(BillingOutbox.account_id == account_id)
        return {status: int(n) for status, n in (await session.execute(stmt)).tuples().all()}


async def drain(db: Database, *reporters: BillingReporter, timeout: float = 60.0) -> None:
    """Runs the reporters until nothing is pending any more, then stops them."""
    tasks = [asyncio.create_task(r.run()) for r in reporters]
    try:
        deadline = time.monotonic() + timeout
        while (await outbox_counts(db)).get(OutboxStatus.PENDING.value, 0):
            assert time.monotonic() < deadline, f"outbox not drained: {await outbox_counts(db)}"
            assert not any(t.done() for t in tasks), "a reporter stopped on its own"
            await asyncio.sleep(0.05)
    finally:
        for r in reporters:
            r.stop()
        await asyncio.gather(*tasks)


def signature_header(raw: bytes, secret: str, *, t: int | None = None, extra_v1: tuple[str, ...] = ()) -> str:
    """``Stripe-Signature`` exactly as Stripe builds it: t=<unix>,v1=HMAC-SHA256(secret, "{t}.{raw}")."""
    t = int(time.time()) if t is None else t
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return ",".join([f"t={t}", *(f"v1={v}" for v in (*extra_v1, v1))])


def event(kind: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> bytes:
    body = {"id": event_id or f"evt_{secrets.token_hex(10)}", "object": "event", "type": kind,
            "created": int(time.time()) if created is None else created, "livemode": False, "api_version": "2026-10-28",
            "data": {"object": obj}}
    return json.dumps(body).encode()
