"""The usage reporter: drains the billing outbox into Stripe Billing Meter events, exactly once.

Exactly once, in three parts:

* Nothing dropped: an outbox row leaves ``pending`` only when Stripe accepted its event, rejected
  it outright (``failed``), or it can no longer be sent safely (``expired``, ``unconfirmed``);
  every one of those is visible to admins.
* Nothing sent twice by us: rows are claimed under a lease, so two reporters never hold the same
  row; a row is marked ``sent`` in the database as soon as Stripe says so.
* The crash window (Stripe accepted, we died before marking ``sent``): the claim itself records
  when the attempt started, the lease lapses, another reporter re-sends the *same identifier*, and
  Stripe de-duplicates it. That is only safe while Stripe still remembers the identifier (~24 h),
  so a row whose oldest unresolved attempt is older than ``billing_dedup_window_seconds`` is not
  re-sent but set aside as ``unconfirmed`` for reconciliation.

Retries: network errors, timeouts, 409, 429 and 5xx are retried per row with exponential backoff
and jitter (honouring ``Retry-After``); when Stripe looks down (several consecutive failures) the
rest of the batch is handed back untouched and the whole reporter backs off the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.billing import repository as repo
from app.billing.outbox import identifier, installation_id
from app.billing.repository import Claimed
from app.billing.stripe_api import SendResult, StripeGateway
from app.config import Settings
from app.db import Database
from app.kit.clock import utcnow

log = logging.getLogger("ponyserve.billing.reporter")

# Consecutive retryable failures within one batch after which Stripe is presumed down.
_BREAKER = 5
# Webhook events are processed by the request that received them; one still unprocessed this
# long after arrival failed there, and the reporter retries it.
_WEBHOOK_RETRY_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class BatchResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    rejected: int = 0
    released: int = 0
    # Stripe looked down: the reporter should back off before the next batch.
    stripe_down: bool = False


def backoff_delay(attempt: int, base: float, cap: float, *, floor: float | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above ``cap``."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(delay, floor or 0.0)


class BillingReporter:
    def __init__(self, db: Database, settings: Settings, *, gateway: StripeGateway | None = None,
                 name: str = "reporter") -> None:
        self.db = db
        self.settings = settings
        self.name = name
        self._gateway = gateway
        self._owns_gateway = gateway is None
        self._stopping = asyncio.Event()
        self._installation: str | None = None
        self._down_streak = 0

    def stop(self) -> None:
        """Finish the requests in flight, hand back the rest of the batch, and return from run()."""
        self._stopping.set()

    @property
    def gateway(self) -> StripeGateway:
        if self._gateway is None:
            self._gateway = StripeGateway(self.settings)
        return self._gateway

    async def run(self) -> None:
        log.info("billing reporter starting", extra={"reporter": self.name})
        last_sweep = float("-inf")
        try:
            while not self._stopping.is_set():
                try:
                    if time.monotonic() - last_sweep >= self.settings.billing_reporter_sweep_seconds:
                        await self.sweep()
                        last_sweep = time.monotonic()
                    result = await self.run_once()
                except Exception:
                    # The database (or anything else) failed: claimed rows stay leased and are
                    # picked up again after the lease, with the same identifiers.
                    log.exception("billing reporter batch failed")
                    result = BatchResult(stripe_down=True)
                if result.stripe_down:
                    self._down_streak += 1
                    delay = backoff_delay(self._down_streak - 1, self.settings.billing_retry_base_seconds,
                                          self.settings.billing_retry_max_seconds)
                    log.warning("billing reporter backing off %.2fs (Stripe or the database unavailable)", delay)
                    await self._pause(delay)
                    continue
                if result.sent:
                    self._down_streak = 0
                if result.claimed < self.settings.billing_reporter_batch_size:
                    await self._pause(self.settings.billing_reporter_idle_seconds)
        finally:
            if self._owns_gateway and self._gateway is not None:
                await self._gateway.close()
            log.info("billing reporter stopped", extra={"reporter": self.name})

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def sweep(self) -> None:
        """Sets aside rows that can no longer be sent safely and retries stuck webhook events."""
        from app.billing.webhooks import process_stored_event

        now = utcnow()
        async with self.db.unit_of_work() as session:
            expired, unconfirmed = await repo.set_aside(session, now=now, **self._cutoffs(now))
        if expired or unconfirmed:
            log.error("billing outbox rows set aside", extra={"expired": expired, "unconfirmed": unconfirmed})
        async with self.db.unit_of_work() as session:
            stuck = await repo.unprocessed_events(session, received_before=now - _WEBHOOK_RETRY_AFTER, limit=100)
        for event_id in stuck:
            await process_stored_event(self.db, self.settings, event_id)

    def _cutoffs(self, now: datetime) -> dict[str, datetime]:
        s = self.settings
        return {"age_cutoff": now - timedelta(seconds=s.billing_event_max_age_seconds),
                "dedup_cutoff": now - timedelta(seconds=s.billing_dedup_window_seconds)}

    async def run_once(self) -> BatchResult:
        """Claims one batch, sends it, records every outcome. Returns what happened."""
        s = self.settings
        if self._installation is None:
            async with self.db.unit_of_work() as session:
                self._installation = await installation_id(session)
        token = secrets.token_hex(8)
        now = utcnow()
        async with self.db.unit_of_work() as session:
            rows = await repo.claim(session, token=token, now=now, limit=s.billing_reporter_batch_size,
                                    lease_seconds=s.billing_reporter_lease_seconds, **self._cutoffs(now))
        if not rows:
            return BatchResult()
        outcomes = await self._send(rows)
        return await self._settle(token, rows, outcomes)

    async def _send(self, rows: list[Claimed]) -> dict[int, SendResult]:
        s = self.settings
        # Every send must end (timeout included) while our lease still holds.
        deadline = time.monotonic() + s.billing_reporter_lease_seconds - s.stripe_timeout_seconds - 1.0
        window = timedelta(seconds=s.billing_dedup_window_seconds)
        gate = asyncio.Semaphore(s.billing_reporter_concurrency)
        outcomes: dict[int, SendResult] = {}
        streak = 0
        assert self._installation is not None
        installation = self._installation

        async def send(row: Claimed) -> None:
            nonlocal streak
            async with gate:
                if streak >= _BREAKER or self._stopping.is_set() or time.monotonic() > deadline:
                    return
                if row.doubt_since is not None and utcnow() - row.doubt_since >= window:
                    return  # too late to repeat safely; the next sweep sets it aside
                result = await self.gateway.send_meter_event(
                    identifier=identifier(s.stripe_identifier_prefix, installation, row.usage_id),
                    customer=row.stripe_customer_id, value=row.value, timestamp=row.occurred_at)
                outcomes[row.usage_id] = result
                streak = streak + 1 if result.outcome == "retry" else 0

        await asyncio.gather(*(send(r) for r in rows))
        return outcomes

    async def _settle(self, token: str, rows: list[Claimed], outcomes: dict[int, SendResult]) -> BatchResult:
        s = self.settings
        now = utcnow()
        sent: list[int] = []
        retries: list[dict[str, object]] = []
        rejected: list[dict[str, object]] = []
        released: list[int] = []
        for row in rows:
            result = outcomes.get(row.usage_id)
            if result is None:
                released.append(row.usage_id)
            elif result.outcome == "sent":
                sent.append(row.usage_id)
            elif result.outcome == "retry":
                delay = backoff_delay(row.attempts, s.billing_retry_base_seconds, s.billing_retry_max_seconds,
                                      floor=result.retry_after)
                retries.append({"usage_id": row.usage_id, "next_attempt_at": now + timedelta(seconds=delay),
                                "error": result.error, "in_doubt": result.in_doubt})
            elif result.outcome == "rejected":
                rejected.append({"usage_id": row.usage_id, "error": result.error})
        async with self.db.unit_of_work() as session:
            newly_sent = await repo.mark_sent(session, sent, now)
            await repo.mark_retry(session, token, retries)
            await repo.mark_rejected(session, token, rejected)
            await repo.release(session, token, released)
            await repo.bump_counters(session, sent=newly_sent, failures=len(retries) + len(rejected))
        stripe_down = bool(retries) and not sent and (bool(released) or len(retries) >= min(_BREAKER, len(rows)))
        batch = BatchResult(claimed=len(rows), sent=len(sent), retried=len(retries), rejected=len(rejected),
                            released=len(released), stripe_down=stripe_down)
        if retries or rejected:
            log.warning("billing batch", extra={"reporter": self.name, **batch.__dict__,
                                                "last_error": (retries or rejected)[-1]["error"]})
        else:
            log.info("billing batch", extra={"reporter": self.name, "claimed": batch.claimed, "sent": batch.sent})
        return batch
