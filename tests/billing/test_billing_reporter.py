"""The usage outbox and its reporter against a fake Stripe: every billable image is billed exactly once."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from billing_helpers import add_usage, billing_settings, drain, link, outbox_counts, paid_account
from fake_stripe import FakeStripe
from sqlalchemy import select, update

from app.billing import repository as repo
from app.billing.models import BillingOutbox
from app.billing.outbox import identifier, installation_id
from app.billing.reconcile import reconcile
from app.billing.reporter import BillingReporter, backoff_delay
from app.billing.stripe_api import StripeGateway
from app.db import Database
from app.kit.clock import utcnow
from app.migrate import upgrade_head


async def _identifiers(db: Database, usage_ids: list[int]) -> set[str]:
    async with db.unit_of_work() as session:
        installation = await installation_id(session)
    return {identifier("ponyserve", installation, u) for u in usage_ids}


async def test_only_billable_ledger_rows_get_outbox_rows(billing_db: str) -> None:
    db = Database(billing_db)
    linked, linked_key = await paid_account(db, customer="cus_linked")
    unlinked, unlinked_key = await paid_account(db)
    free, free_key = await paid_account(db, customer="cus_free", paid=False)
    mine = BillingOutbox.account_id.in_([linked, unlinked, free])
    try:
        billable = await add_usage(db, linked, linked_key, 3)
        await add_usage(db, unlinked, unlinked_key, 2)       # not linked yet: never billed to Stripe
        await add_usage(db, free, free_key, 2, plan_paid=False)  # free plan: nothing to bill
        await add_usage(db, linked, linked_key, 1, plan_paid=False)  # generated while on a free plan
        await link(db, unlinked, "cus_later")
        after_link = await add_usage(db, unlinked, unlinked_key, 1)
        async with db.unit_of_work() as session:
            rows = (await session.execute(select(BillingOutbox).where(mine).order_by(BillingOutbox.usage_id))
                    ).scalars().all()
        assert [(r.usage_id, r.account_id, r.stripe_customer_id, r.value, r.status) for r in rows] == [
            *[(u, linked, "cus_linked", 1, "pending") for u in billable], (after_link[0], unlinked, "cus_later", 1,
                                                                           "pending")]
        assert all(r.occurred_at == r.next_attempt_at for r in rows)
    finally:
        async with db.unit_of_work() as session:  # nothing left pending for the other tests' reporters
            await session.execute(update(BillingOutbox).where(mine).values(status="dismissed"))
        await db.dispose()


async def test_thousand_rows_with_injected_failures_are_billed_exactly_once(billing_db: str, fake: FakeStripe,
                                                                            tmp_path: Path) -> None:
    settings = billing_settings(billing_db, tmp_path, fake, billing_reporter_batch_size=100,
                                billing_reporter_concurrency=8)
    db = Database(billing_db)
    try:
        tag = secrets.token_hex(3)
        accounts = [await paid_account(db, customer=f"cus_{tag}{i}") for i in range(4)]
        async with db.unit_of_work() as session:
            before = await repo.counters(session)
        usage: list[int] = []
        for account, key in accounts:
            for _ in range(5):
                usage += await add_usage(db, account, key, 50)
        assert len(usage) == 1000
        fake.fail_randomly(**{"500": 0.03, "500_after": 0.02, "429": 0.03, "hang": 0.004})
        # Two reporters at once: they must never hold the same row.
        await drain(db, BillingReporter(db, settings, name="a"), BillingReporter(db, settings, name="b"),
                    timeout=80)

        expected = await _identifiers(db, usage)
        accepted = fake.accepted()
        assert set(accepted) == expected
        assert len(accepted) == 1000
        for i in range(4):
            assert fake.total_for(f"cus_{tag}{i}") == 250
        # An identifier reached Stripe twice only when Stripe had accepted it without our learning so
        # (500 after processing, hung answer); Stripe's de-duplication absorbed those repeats.
        state = fake.state
        assert set(state.duplicates) <= state.unacknowledged
        modes = [m for _, m in state.requests]
        assert {"500", "500_after", "429"} <= set(modes)
        for account, _ in accounts:
            assert await outbox_counts(db, account) == {"sent": 250}
        async with db.unit_of_work() as session:
            after = await repo.counters(session)
            leftovers = (await session.execute(select(BillingOutbox).where(
                BillingOutbox.usage_id.in_(usage),
                BillingOutbox.claim_token.is_not(None) | BillingOutbox.doubt_since.is_not(None)))).all()
        assert after["sent"] - before.get("sent", 0) == 1000
        # Every injected failure cost an attempt (a loaded box may add client timeouts of its own).
        assert after["failures"] - before.get("failures", 0) >= sum(1 for m in modes if m != "ok")
        assert leftovers == []
    finally:
        await db.dispose()


async def test_events_older_than_stripe_accepts_are_set_aside(billing_db: str, fake: FakeStripe,
                                                             tmp_path: Path) -> None:
    settings = billing_settings(billing_db, tmp_path, fake)
    db = Database(billing_db)
    try:
        account, key = await paid_account(db, customer="cus_old")
        old = await add_usage(db, account, key, 3, at=utcnow() - timedelta(days=36))
        fresh = await add_usage(db, account, key, 2)
        await drain(db, BillingReporter(db, settings))
        assert set(fake.accepted()) == await _identifiers(db, fresh)
        async with db.unit_of_work() as session:
            expired = await repo.list_rows(session, statuses=["expired"], account_id=account, limit=10, offset=0)
        assert [r.usage_id for r in expired] == old
        assert all("35 days" in (r.last_error or "") for r in expired)
    finally:
        await db.dispose()


async def test_a_doubtful_attempt_is_repeated_only_within_the_dedup_window(billing_db: str, fake: FakeStripe,
                                                                          tmp_path: Path) -> None:
    settings = billing_settings(billing_db, tmp_path, fake)
    db = Database(billing_db)
    try:
        account, key = await paid_account(db, customer="cus_doubt")
        recent, stale, crashed = (await add_usage(db, account, key, 1), await add_usage(db, account, key, 1),
                                  await add_usage(db, account, key, 1))
        now = utcnow()
        async with db.unit_of_work() as session:
            # A timeout one hour ago: still inside Stripe's de-duplication window → re-sent.
            await session.execute(update(BillingOutbox).where(BillingOutbox.usage_id == recent[0])
                                  .values(doubt_since=now - timedelta(hours=1), attempts=1, failures=1))
            # A timeout 23.5 hours ago: Stripe may have it and may no longer de-duplicate → set aside.
            await session.execute(update(BillingOutbox).where(BillingOutbox.usage_id == stale[0])
                                  .values(doubt_since=now - timedelta(hours=23, minutes=30), attempts=1))
            # A reporter that died holding the row a day ago (lease long gone): same.
            await session.execute(update(BillingOutbox).where(BillingOutbox.usage_id == crashed[0])
                                  .values(claim_token="dead", claimed_at=now - timedelta(days=1),
                                          lease_until=now - timedelta(days=1) + timedelta(minutes=2)))
        await drain(db, BillingReporter(db, settings))
        assert set(fake.accepted()) == await _identifiers(db, recent)
        async with db.unit_of_work() as session:
            rows = {r.usage_id: r for r in await repo.list_rows(session, statuses=None, account_id=account,
                                                                limit=10, offset=0)}
        assert rows[recent[0]].status == "sent"
        assert rows[stale[0]].status == rows[crashed[0]].status == "unconfirmed"
        assert rows[crashed[0]].doubt_since == now - timedelta(days=1)
    finally:
        await db.dispose()


async def test_an_event_stripe_rejects_is_set_aside_as_failed(billing_db: str, fake: FakeStripe,
                                                             tmp_path: Path) -> None:
    settings = billing_settings(billing_db, tmp_path, fake)
    db = Database(billing_db)
    try:
        account, key = await paid_account(db, customer="cus_rejected")
        usage = await add_usage(db, account, key, 3)
        fake.fail_next("reject")
        await drain(db, BillingReporter(db, settings, gateway=None))
        assert await outbox_counts(db, account) == {"sent": 2, "failed": 1}
        async with db.unit_of_work() as session:
            [failed] = await repo.list_rows(session, statuses=["failed"], account_id=account, limit=10, offset=0)
        assert failed.usage_id in usage
        assert "Injected rejection" in (failed.last_error or "")
    finally:
        await db.dispose()


async def test_rate_limits_and_outages_are_retried_with_backoff_not_dropped(billing_db: str, fake: FakeStripe,
                                                                           tmp_path: Path) -> None:
    settings = billing_settings(billing_db, tmp_path, fake)
    db = Database(billing_db)
    gateway = StripeGateway(settings)
    try:
        account, key = await paid_account(db, customer="cus_429")
        [usage] = await add_usage(db, account, key, 1)
        reporter = BillingReporter(db, settings, gateway=gateway)
        fake.fail_next("429")
        first = await reporter.run_once()
        assert (first.claimed, first.sent, first.retried) == (1, 0, 1)
        async with db.unit_of_work() as session:
            row = await repo.get_row(session, usage)
        assert row is not None and row.status == "pending" and row.doubt_since is None  # 429: not processed
        assert row.next_attempt_at > utcnow() - timedelta(seconds=1)
        fake.stop()
        await asyncio.sleep(0.5)
        second = await reporter.run_once()
        assert (second.claimed, second.retried, second.stripe_down) == (1, 1, True)
        async with db.unit_of_work() as session:
            row = await repo.get_row(session, usage)
        assert row is not None and row.doubt_since is None  # connection refused: never reached Stripe
        fake.start()
        await asyncio.sleep(0.5)
        third = await reporter.run_once()
        assert third.sent == 1
        assert fake.state.duplicates == []
    finally:
        await gateway.close()
        await db.dispose()


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    delays = [backoff_delay(n, 1.0, 60.0) for n in range(10)]
    for n, d in enumerate(delays):
        ceiling = min(60.0, 2.0 ** n)
        assert ceiling / 2 <= d <= ceiling
    assert backoff_delay(3, 1.0, 60.0, floor=30.0) == 30.0
    assert len({backoff_delay(5, 1.0, 60.0) for _ in range(20)}) > 1


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    upgrade_head(url)
    return url


async def test_sqlite_two_reporters_bill_each_image_once(sqlite_url: str, fake: FakeStripe, tmp_path: Path) -> None:
    """The embedded default: SQLite's single writer stands in for SKIP LOCKED."""
    settings = billing_settings(sqlite_url, tmp_path, fake, billing_reporter_batch_size=20)
    db = Database(sqlite_url)
    gateway = StripeGateway(settings)
    try:
        account, key = await paid_account(db)
        await add_usage(db, account, key, 2)  # before the customer link: not billed
        await link(db, account, "cus_sqlite")
        usage = []
        for _ in range(4):
            usage += await add_usage(db, account, key, 30)
        fake.fail_randomly(**{"500": 0.05, "500_after": 0.05, "429": 0.05})
        await drain(db, BillingReporter(db, settings, name="a"), BillingReporter(db, settings, name="b"))
        assert set(fake.accepted()) == await _identifiers(db, usage)
        assert set(fake.state.duplicates) <= fake.state.unacknowledged
        assert await outbox_counts(db, account) == {"sent": 120}

        report = await reconcile(db, settings, utcnow().strftime("%Y-%m"), gateway)
        assert report["ok"] is True and report["stripe"] == "compared"
        assert report["accounts"] == [{"account_id": account, "billable_images": 122, "unbilled_before_link": 2,
                                       "missing_outbox": 0}]
        assert [(c["stripe_customer_id"], c["outbox"]["sent"], c["stripe_total"]) for c in report["customers"]] == \
            [("cus_sqlite", 120, 120.0)]
    finally:
        await gateway.close()
        await db.dispose()
