"""Quota reservations, rate limits, in-flight limits and idempotency, as the API and workers use them.

A job's images are reserved when it is accepted (same transaction as the job row),
turned into usage when it succeeds and given back when it fails, is cancelled or is
lost — each exactly once, guarded by the job's ``reservation_state`` transition.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, ApiKey
from app.errors import AppError, Conflict, QuotaExceeded, RateLimited
from app.licensing import service as licensing
from app.queue.models import Job
from app.quotas import repository as repo
from app.quotas.limits import Limits, effective_limits
from app.quotas.models import IdempotencyRecord
from app.quotas.periods import day_start, month_start, next_day, next_month
from app.quotas.repository import CounterKey

IDEMPOTENCY_TTL = timedelta(hours=24)


# -- rate limits (GCRA) --------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    limit: int
    window: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        # IETF draft-ietf-httpapi-ratelimit-headers (structured fields syntax).
        return {
            "RateLimit-Policy": f'"requests";q={self.limit};w={self.window}',
            "RateLimit": f'"requests";r={self.remaining};t={self.reset_seconds}',
        }


async def take_rate_token(session: AsyncSession, key: ApiKey, limits: Limits, now: datetime) -> RateDecision | None:
    """Admits one request or raises 429; None when the key has no rate limit."""
    rpm = limits.requests_per_minute
    if not rpm:
        return None
    burst = max(1, limits.burst or 1)
    interval = 60.0 / rpm
    tolerance = interval * (burst - 1)
    t = now.timestamp()
    allowed, tat = await repo.gcra_take(session, key.id, now=t, interval=interval, tolerance=tolerance)
    if not allowed:
        retry_after = max(1, math.ceil(tat - tolerance - t))
        decision = RateDecision(limit=burst, window=60, remaining=0, reset_seconds=math.ceil(tat - t))
        raise RateLimited(
            f"Rate limit of {rpm} requests per minute (burst {burst}) reached; retry in {retry_after}s.",
            code="rate_limit_exceeded", headers={**decision.headers(), "Retry-After": str(retry_after)},
        )
    remaining = max(0, math.floor((tolerance - (tat - t)) / interval) + 1)
    return RateDecision(limit=burst, window=60, remaining=min(remaining, burst),
                        reset_seconds=max(0, math.ceil(tat - t)))


# -- in-flight limits ----------------------------------------------------------------


async def check_inflight(session: AsyncSession, key: ApiKey, limits: Limits) -> None:
    if limits.max_concurrent_jobs is None and limits.max_queued_jobs is None:
        return
    queued, running = await repo.lock_key_and_count_inflight(session, key.id)
    if limits.max_queued_jobs is not None and queued >= limits.max_queued_jobs:
        raise RateLimited(f"This key already has {queued} queued jobs (limit {limits.max_queued_jobs}).",
                          code="queue_limit_exceeded", headers={"Retry-After": "1"})
    if limits.max_concurrent_jobs is not None and queued + running >= limits.max_concurrent_jobs:
        raise RateLimited(
            f"This key already has {queued + running} jobs in flight (limit {limits.max_concurrent_jobs}).",
            code="concurrency_limit_exceeded", headers={"Retry-After": "1"},
        )


# -- image quotas ----------------------------------------------------------------------


def _counter_limits(account: Account, key: ApiKey, job: Job) -> list[tuple[CounterKey, int | None]]:
    assert job.quota_day is not None and job.quota_month is not None
    account_limits = effective_limits(account)
    key_overrides = key.limit_overrides or {}
    pairs: list[tuple[CounterKey, int | None]] = [
        (("account", account.id, "day", job.quota_day), account_limits.daily_image_quota),
        (("account", account.id, "month", job.quota_month), account_limits.monthly_image_quota),
        (("key", key.id, "day", job.quota_day), key_overrides.get("daily_image_quota")),
        (("key", key.id, "month", job.quota_month), key_overrides.get("monthly_image_quota")),
    ]
    return sorted(pairs, key=lambda p: p[0])


def _job_counter_keys(job: Job) -> list[CounterKey]:
    assert job.quota_day is not None and job.quota_month is not None
    return sorted([
        ("account", job.account_id, "day", job.quota_day), ("account", job.account_id, "month", job.quota_month),
        ("key", job.api_key_id, "day", job.quota_day), ("key", job.api_key_id, "month", job.quota_month),
    ])


async def reserve(session: AsyncSession, account: Account, key: ApiKey, job: Job, now: datetime) -> None:
    """Reserves the job's images on every counter, or raises 402 and (by rollback) reserves nothing."""
    job.quota_day, job.quota_month = day_start(now), month_start(now)
    pairs = _counter_limits(account, key, job)
    taken = set() if any(limit is not None and job.n > limit for _, limit in pairs) else \
        await repo.try_reserve_all(session, pairs, job.n, now)
    for counter, limit in pairs:
        if counter not in taken:
            scope, _, period, start = counter
            resets = next_day(start) if period == "day" else next_month(start)
            raise QuotaExceeded(
                f"The {'key' if scope == 'key' else 'account'}'s {'daily' if period == 'day' else 'monthly'} image "
                f"quota of {limit} is used up (this request needs {job.n}); it resets at {resets.isoformat()}.",
                code=f"{'daily' if period == 'day' else 'monthly'}_quota_exceeded",
                extra={"limit": limit, "resets_at": resets.isoformat(), "scope": scope},
            )
    job.reservation_state = "held"


async def settle_job(session: AsyncSession, job_id: str, delivered: int, now: datetime) -> bool:
    """Ends the job's reservation: ``delivered`` images become usage, the rest is released. Once only."""
    job = await repo.mark_reservation(session, job_id, "committed" if delivered else "released")
    if job is None:
        return False
    for counter in _job_counter_keys(job):
        await repo.settle(session, counter, reserved=job.n, used=min(delivered, job.n), now=now)
    # The licence counter was reserved in the same transaction as these; it ends with them.
    await licensing.settle(session, job, delivered)
    return True


async def settle_jobs(session: AsyncSession, job_ids: Iterable[str], now: datetime) -> None:
    """Releases the reservations of jobs that ended without output (sorted: fixed lock order)."""
    for job_id in sorted(job_ids):
        await settle_job(session, job_id, 0, now)


@dataclass(frozen=True)
class PeriodUsage:
    used: int
    reserved: int
    limit: int | None
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used - self.reserved)


async def current_usage(session: AsyncSession, account: Account, key: ApiKey, now: datetime
                        ) -> dict[str, dict[str, PeriodUsage]]:
    day, month = day_start(now), month_start(now)
    account_limits = effective_limits(account)
    overrides = key.limit_overrides or {}
    wanted: dict[tuple[str, str], tuple[CounterKey, int | None, datetime]] = {
        ("account", "day"): (("account", account.id, "day", day), account_limits.daily_image_quota, next_day(day)),
        ("account", "month"): (("account", account.id, "month", month), account_limits.monthly_image_quota,
                               next_month(month)),
        ("key", "day"): (("key", key.id, "day", day), overrides.get("daily_image_quota"), next_day(day)),
        ("key", "month"): (("key", key.id, "month", month), overrides.get("monthly_image_quota"), next_month(month)),
    }
    found = await repo.counters(session, [v[0] for v in wanted.values()])
    out: dict[str, dict[str, PeriodUsage]] = {"account": {}, "key": {}}
    for (scope, period), (counter, limit, resets) in wanted.items():
        row = found.get(counter)
        out[scope][period] = PeriodUsage(used=row.used if row else 0, reserved=row.reserved if row else 0,
                                         limit=limit, resets_at=resets)
    return out


# -- idempotency -----------------------------------------------------------------------


def request_fingerprint(endpoint: str, body: dict[str, object]) -> str:
    canonical = json.dumps({"endpoint": endpoint, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def begin_idempotent(session: AsyncSession, key: ApiKey, idem_key: str, endpoint: str, fingerprint: str,
                           now: datetime) -> str | None:
    """Claims the key for this request (None), or returns the job id of the request that claimed it."""
    record = IdempotencyRecord(api_key_id=key.id, key=idem_key, request_hash=fingerprint, state="accepting",
                               endpoint=endpoint, created_at=now, expires_at=now + IDEMPOTENCY_TTL)
    existing = await repo.claim_idempotency(session, record, now, stale_accepting_before=now - timedelta(seconds=60))
    if existing is None:
        return None
    if existing.request_hash != fingerprint:
        raise AppError.unprocessable(
            "This Idempotency-Key was used with a different request body or endpoint.",
            code="idempotency_key_reused", param="Idempotency-Key",
        )
    if existing.state != "accepted" or existing.job_id is None:
        raise Conflict("A request with this Idempotency-Key is still being accepted; retry shortly.",
                       code="idempotency_in_progress", headers={"Retry-After": "1"})
    return existing.job_id


async def finish_idempotent(session: AsyncSession, key: ApiKey, idem_key: str, job_id: str) -> None:
    await repo.accept_idempotency(session, key.id, idem_key, job_id)


async def abandon_idempotent(session: AsyncSession, key: ApiKey, idem_key: str) -> None:
    """The first request failed before a job existed: a retry may try afresh."""
    await repo.forget_idempotency(session, key.id, idem_key)
