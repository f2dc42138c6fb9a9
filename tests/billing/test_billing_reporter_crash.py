"""A reporter SIGKILLed mid-batch, after Stripe accepted events it never marked sent, and a new one
started: every image is still billed exactly once (the repeats carry the same identifiers)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from billing_helpers import add_usage, outbox_counts, paid_account
from fake_stripe import API_KEY, FakeStripe
from harness import service_env, spawn
from sqlalchemy import select

from app.billing.models import BillingOutbox
from app.billing.outbox import identifier, installation_id
from app.db import Database


def _env(database_url: str, tmp_path: Path, fake: FakeStripe) -> dict[str, str]:
    return service_env(database_url, tmp_path, tmp_path / "no-model", PONYSERVE_STRIPE_SECRET_KEY=API_KEY,
                       PONYSERVE_STRIPE_API_BASE=fake.url, PONYSERVE_STRIPE_TIMEOUT_SECONDS="1",
                       PONYSERVE_BILLING_REPORTER_LEASE_SECONDS="4", PONYSERVE_BILLING_REPORTER_BATCH_SIZE="100",
                       PONYSERVE_BILLING_REPORTER_CONCURRENCY="4", PONYSERVE_BILLING_REPORTER_IDLE_SECONDS="0.1",
                       PONYSERVE_BILLING_RETRY_BASE_SECONDS="0.05", PONYSERVE_BILLING_RETRY_MAX_SECONDS="0.4")


async def test_reporter_killed_mid_batch_and_restarted_bills_exactly_once(billing_db: str, fake: FakeStripe,
                                                                         tmp_path: Path) -> None:
    db = Database(billing_db)
    procs = []
    try:
        account, key = await paid_account(db, customer="cus_crash")
        usage = await add_usage(db, account, key, 400)
        async with db.unit_of_work() as session:
            installation = await installation_id(session)
        expected = {identifier("ponyserve", installation, u) for u in usage}
        env = _env(billing_db, tmp_path, fake)

        # The 150th event (second batch) is processed by Stripe, then its answer withheld: the
        # reporter is killed while it waits, with that batch's accepted events not marked sent.
        fake.hold_request(150)
        doomed = spawn(["billing-reporter"], env, tmp_path / "doomed.log")
        procs.append(doomed)
        deadline = time.monotonic() + 60
        while not fake.held.is_set():
            assert doomed.poll() is None, (tmp_path / "doomed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the reporter never reached the held request"
            await asyncio.sleep(0.01)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        fake.release.set()

        async with db.unit_of_work() as session:
            orphaned = (await session.execute(select(BillingOutbox.usage_id).where(
                BillingOutbox.account_id == account, BillingOutbox.status == "pending",
                BillingOutbox.claim_token.is_not(None)))).scalars().all()
        in_crash_window = {identifier("ponyserve", installation, u) for u in orphaned} & set(fake.accepted())
        assert in_crash_window, "the kill should leave events Stripe accepted but we never marked sent"
        assert (await outbox_counts(db, account)).get("sent", 0) <= 100

        rescuer = spawn(["billing-reporter"], env, tmp_path / "rescuer.log")
        procs.append(rescuer)
        deadline = time.monotonic() + 60
        while (await outbox_counts(db, account)) != {"sent": 400}:
            assert rescuer.poll() is None, (tmp_path / "rescuer.log").read_text()[-3000:]
            assert time.monotonic() < deadline, await outbox_counts(db, account)
            await asyncio.sleep(0.1)
        rescuer.send_signal(signal.SIGTERM)
        assert rescuer.wait(timeout=30) == 0

        accepted = fake.accepted()
        assert set(accepted) == expected
        assert fake.total_for("cus_crash") == 400
        # Repeats happened, all of them events whose acceptance the dead reporter never recorded,
        # and Stripe's de-duplication counted each once.
        duplicates = fake.state.duplicates
        assert duplicates
        assert set(duplicates) <= in_crash_window
        assert len(duplicates) == len(set(duplicates))
        async with db.unit_of_work() as session:
            rows = (await session.execute(select(BillingOutbox).where(BillingOutbox.account_id == account))
                    ).scalars().all()
        assert all(r.claim_token is None and r.doubt_since is None and r.sent_at is not None for r in rows)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await db.dispose()
