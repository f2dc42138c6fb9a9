"""Quota reservations, rate limits, in-flight limits and idempotency, as the API and workers use them.

A job's images are reserved when it is accepted (same transaction as the job row),
turned into usage when it succeeds and given back when it fails, is cancelled or is
lost — each exactly once, guarded by the job's ``reservation_state`` transition.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, ApiKey
from app.errors import AppError, Conflict, QuotaExceeded, RateLimited
from app.licensing import service as licensing
from app.queue.models import Job, JobStatus
from app.quotas import repository as repo
from app.quotas.limits import Limits, effective_limits
from app.quotas.models import IdempotencyRecord
from app.quotas.periods import day_start, month_start, next_day, next_month
from app.quotas.repository import CounterKey

IDEMPOTENCY_TTL = timedelta(hours=24)


# -- rate limits (GCRA) --------------------------------------------------------------

# Float epoch seconds carry about a quarter of a microsecond of rounding: "tat - now" of a bucket one
# token down can come out a hair above one interval, which would show a token fewer and a second more.
_CLOCK_SLACK = 1e-6


@dataclass(frozen=True)
class RateDecision:
    """What the rate limiter decided, as the IETF RateLimit headers state it.

    The limiter is GCRA: a token bucket of ``burst`` tokens refilled at rpm/60 tokens a second, one
    token per request. A window policy ``q`` per ``w`` seconds describes it honestly only if a
    client that keeps to it is never refused. ``q=burst`` per ``w=ceil(burst*60/rpm)`` does: within
    any ``w`` seconds at least ``burst`` tokens flow back, so ``burst`` requests per ``w`` never
    outrun the bucket. (``q=burst;w=60`` claimed only ``burst`` a minute; ``q=rpm;w=60`` would let a
    client spend a minute's requests in one go, beyond the bucket.) ``remaining`` is the whole tokens
    in the bucket now, ``reset_seconds`` how long until it is full again; on a refusal ``remaining``
    is 0 and Retry-After says when the next token is there.
    """

    limit: int  # q: the bucket's capacity (the burst)
    window: int  # w: seconds in which the bucket refills at least ``limit`` tokens
    remaining: int  # r: whole tokens available now
    reset_seconds: int  # t: seconds until the bucket is full

    def headers(self) -> dict[str, str]:
        # IETF draft-ietf-httpapi-ratelimit-headers (structured fields syntax).
        return {
            "RateLimit-Policy": f'"requests";q={self.limit};w={self.window}',
            "RateLimit": f'"requests";r={self.remaining};t={self.reset_seconds}',
        }


@dataclass(frozen=True)
class _Gcra:
    """A key's rate limit in GCRA terms: one request per ``interval`` seconds, ``burst`` at once."""

    rpm: int
    burst: int

    @classmethod
    def of(cls, limits: Limits) -> _Gcra | None:
        if not limits.requests_per_minute:
            return None
        return cls(rpm=limits.requests_per_minute, burst=max(1, limits.burst or 1))

    @property
    def interval(self) -> float:
        return 60.0 / self.rpm

    @property
    def tolerance(self) -> float:
        # How far ahead of now tat may be and a request still pass: the burst's other requests.
        return self.interval * (self.burst - 1)

    @property
    def window(self) -> int:
        return max(1, -(-self.burst * 60 // self.rpm))  # ceil(burst * 60 / rpm), in integers

    def decision(self, step: repo.GcraStep) -> RateDecision:
        """The headers' view of the bucket after ``step``, measured at the database's time."""
        ahead = max(0.0, step.tat - step.now)  # how much of the bucket is still refilling, in seconds
        if step.allowed:
            # An admitted request just set tat to at least (its now) + interval; the now returned
            # with it is read a few microseconds later in the same statement, so clamp, or a full
            # bucket minus the token just spent would read as full.
            ahead = max(ahead, self.interval)
        tokens = math.floor((self.burst * self.interval - ahead + _CLOCK_SLACK) / self.interval)
        return RateDecision(limit=self.burst, window=self.window,
                            remaining=min(self.burst, max(0, tokens)) if step.allowed else 0,
                            reset_seconds=max(0, math.ceil(ahead - _CLOCK_SLACK)))

    def retry_after(self, step: repo.GcraStep) -> int:
        """Whole seconds until a refused key's next token: when tat is back within the tolerance."""
        return max(1, math.ceil(step.tat - self.tolerance - step.now))


async def take_rate_token(session: AsyncSession, key: ApiKey, limits: Limits,
                          now: datetime | None = None) -> RateDecision | None:
    """Admits one request or raises 429; None when the key has no rate limit.

    The database's clock times the request, read once the key's rate row is locked (``now`` is
    ignored, kept for existing callers): a time taken before the lock wait made requests that had
    queued behind others look early. Call it in its own short transaction, so the row lock (and on
    SQLite the write lock) is held for one statement's worth of time.
    """
    gcra = _Gcra.of(limits)
    if gcra is None:
        return None
    step = await repo.gcra_take(session, key.id, interval=gcra.interval, tolerance=gcra.tolerance)
    decision = gcra.decision(step)
    if not step.allowed:
        retry_after = gcra.retry_after(step)
        raise RateLimited(
            f"Rate limit of {gcra.rpm} requests per minute (burst {gcra.burst}) reached; retry in {retry_after}s.",
            code="rate_limit_exceeded", headers={**decision.headers(), "Retry-After": str(retry_after)},
        )
    return decision


async def refund_rate_token(session: AsyncSession, key: ApiKey, limits: Limits) -> None:
    """Gives back the token ``take_rate_token`` took, for a request refused before it did any work
    (an in-flight limit): a client polling for a free slot must not also run out of rate."""
    gcra = _Gcra.of(limits)
    if gcra is not None:
        await repo.gcra_refund(session, key.id, interval=gcra.interval)


# -- in-flight limits ----------------------------------------------------------------

# What each in-flight limit counts. A delivering job has finished generating but is still being
# encoded, stored and settled by its worker: it holds the key's slot until it ends, so it is running.
QUEUED_STATUSES = (JobStatus.QUEUED,)
RUNNING_STATUSES = (JobStatus.RUNNING, JobStatus.DELIVERING)

# The 429 codes of in-flight refusals: nothing was queued, so callers refund the rate token.
INFLIGHT_CODES = frozenset({"concurrency_limit_exceeded", "queue_limit_exceeded"})


async def check_inflight(session: AsyncSession, key: ApiKey, limits: Limits) -> None:
    """Refuses (429) a job the key has no room for: ``max_concurrent_jobs`` bounds its running jobs,
    ``max_queued_jobs`` its waiting ones. Takes the key's lock until the transaction ends, so the
    caller's enqueue in the same transaction cannot race another past the limits."""
    if limits.max_concurrent_jobs is None and limits.max_queued_jobs is None:
        return
    counts = await repo.lock_key_and_count_jobs(session, key.id, (*QUEUED_STATUSES, *RUNNING_STATUSES))
    running = sum(counts[s] for s in RUNNING_STATUSES)
    queued = sum(counts[s] for s in QUEUED_STATUSES)
    if limits.max_concurrent_jobs is not None and running >= limits.max_concurrent_jobs:
        raise RateLimited(
            f"This key already has {running} jobs running (limit {limits.max_concurrent_jobs}).",
            code="concurrency_limit_exceeded", headers={"Retry-After": "1"},
        )
    if limits.max_queued_jobs is not None and queued >= limits.max_queued_jobs:
        raise RateLimited(f"This key already has {queued} jobs queued (limit {limits.max_queued_jobs}).",
                          code="queue_limit_exceeded", headers={"Retry-After": "1"})


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


async def record_late_usage(session: AsyncSession, job: Job, images: int, now: datetime) -> None:
    """Counts ``images`` of ``job`` delivered after its reservation was settled (a withheld image a
    moderator released) as usage of the period ``now`` is in, on the job's account and key counters.

    No limit applies: the image already exists and the caller is owed it. Counters are taken in
    the same sorted order as every reservation, so this cannot deadlock against one."""
    day, month = day_start(now), month_start(now)
    for counter in sorted([("account", job.account_id, "day", day), ("account", job.account_id, "month", month),
                           ("key", job.api_key_id, "day", day), ("key", job.api_key_id, "month", month)]):
        await repo.add_used(session, counter, images, now)


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
