"""What operators do from the console, on top of the domain services.

Every change here is written to the audit trail (``moderation_audit_log``, the one the moderators'
decisions already go to) with the key that made it, in the change's own transaction: a change
and its record stand or fall together. The reads gather, for the console's pages, what several
domains know about one question (what is stuck, what happened to this job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.models import Account, ApiKey, Plan
from app.accounts.service import Principal
from app.admin import repository as repo
from app.billing import service as billing
from app.billing.models import BillingOutbox
from app.billing.schemas import BillingOverview
from app.billing.stripe_api import StripeGateway
from app.config import Settings
from app.errors import Conflict, NotFound
from app.generation.service import LISTED_STATUSES
from app.kit.clock import utcnow
from app.licensing import service as licensing
from app.metering import repository as ledger
from app.metering.usage import aggregate
from app.moderation import service as moderation
from app.moderation.models import ModerationReview
from app.queue import repository as queue
from app.queue.models import Job, JobOutput, JobStatus
from app.quotas.periods import day_start, month_start, next_month
from app.settlement import service as settlement


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """An audit entry's detail as JSON can hold it (dates, decimals)."""
    plain: dict[str, Any] = to_jsonable_python(values)
    return plain


async def _audit(session: AsyncSession, actor: Principal, action: str, target_type: str, target_id: str | int,
                 **detail: Any) -> None:
    await moderation.audit(session, actor, action, target_type, target_id, **_plain(detail))


# -- accounts, keys, plans ---------------------------------------------------------------------


async def create_account(session: AsyncSession, actor: Principal, *, name: str, plan_code: str) -> Account:
    account = await accounts.create_account(session, name=name, plan_code=plan_code)
    await _audit(session, actor, "account.create", "account", account.id, name=name, plan=plan_code)
    return account


async def update_account(session: AsyncSession, actor: Principal, account_id: str, changes: dict[str, Any]
                         ) -> tuple[Account, list[str]]:
    """As :func:`app.accounts.service.update_account`; the entry keeps what was asked for."""
    asked = dict(changes)
    # A copy: the accounts service consumes the keys it applies.
    account, cancelled = await accounts.update_account(session, account_id, dict(changes))
    await _audit(session, actor, "account.update", "account", account_id, changes=asked, cancelled_jobs=cancelled)
    return account, cancelled


async def create_key(session: AsyncSession, actor: Principal, *, account_id: str, name: str, scopes: Sequence[str]
                     ) -> tuple[ApiKey, str]:
    key, token = await accounts.create_key(session, account_id=account_id, name=name, scopes=scopes)
    await _audit(session, actor, "key.create", "key", key.id, account_id=account_id, name=name, scopes=key.scopes,
                 prefix=key.prefix)
    return key, token


async def revoke_key(session: AsyncSession, actor: Principal, key_id: str) -> tuple[ApiKey, list[str]]:
    key, cancelled = await accounts.revoke_key(session, key_id)
    await _audit(session, actor, "key.revoke", "key", key_id, account_id=key.account_id, cancelled_jobs=cancelled)
    return key, cancelled


async def create_plan(session: AsyncSession, actor: Principal, values: dict[str, Any]) -> Plan:
    plan = await accounts.create_plan(session, values)
    await _audit(session, actor, "plan.create", "plan", plan.code, values=values)
    return plan


async def update_plan(session: AsyncSession, actor: Principal, code: str, changes: dict[str, Any]) -> Plan:
    plan = await accounts.update_plan(session, code, changes)
    await _audit(session, actor, "plan.update", "plan", code, changes=changes)
    return plan


async def link_stripe_customer(session: AsyncSession, actor: Principal, gateway: StripeGateway | None,
                               account_id: str, customer_id: str) -> list[str]:
    """Links an existing Stripe customer; returns the stored webhook events to apply once this commits."""
    reopened = await billing.link_customer(session, gateway, account_id, customer_id=customer_id, email=None,
                                           now=utcnow())
    await _audit(session, actor, "account.link_stripe", "account", account_id, stripe_customer_id=customer_id)
    return reopened


# -- billing ---------------------------------------------------------------------------------


async def resolve_outbox(session: AsyncSession, actor: Principal, settings: Settings, usage_id: int, action: str
                         ) -> BillingOutbox:
    row = await billing.resolve(session, settings, usage_id, action, by=actor.key.id, now=utcnow())
    await _audit(session, actor, "billing.outbox_resolve", "outbox", usage_id, decision=action,
                 account_id=row.account_id)
    return row


async def record_reconciliation(session: AsyncSession, actor: Principal, report: dict[str, Any]) -> None:
    await billing.record_reconciliation(session, report, by=actor.key.id, now=utcnow())
    await _audit(session, actor, "billing.reconcile", "billing", report["month"], ok=report["ok"],
                 discrepancies=len(report["discrepancies"]), stripe=report["stripe"])


# -- jobs ---------------------------------------------------------------------------------------


async def search_jobs(session: AsyncSession, *, account_id: str | None, status: str | None, limit: int,
                      offset: int) -> Sequence[Job]:
    """Every account's jobs, newest first; ``status`` as partners see it (running includes delivering)."""
    statuses = None if status is None else list(LISTED_STATUSES[status])
    return await repo.search_jobs(session, account_id=account_id, statuses=statuses, limit=limit, offset=offset)


@dataclass(frozen=True)
class JobDetail:
    job: Job
    outputs: Sequence[JobOutput]
    reviews: Sequence[ModerationReview]
    charged_images: int
    queue_position: int | None

    @property
    def cancellable(self) -> bool:
        return not JobStatus(self.job.status).is_terminal


async def job_detail(session: AsyncSession, job_id: str) -> JobDetail:
    job = await queue.get_job(session, job_id)
    if job is None:
        raise NotFound(f"No job '{job_id}'.", param="id")
    position = await queue.queue_position(session, job) if job.status == JobStatus.QUEUED else None
    return JobDetail(job=job, outputs=await queue.outputs_of(session, job_id, include_withheld=True),
                     reviews=await moderation.reviews_of_job(session, job_id),
                     charged_images=await ledger.count_for_job(session, job_id), queue_position=position)


async def cancel_job(session: AsyncSession, actor: Principal, job_id: str) -> None:
    """Cancels any account's unfinished job through the one settlement path (released, not charged)."""
    job = await queue.get_job(session, job_id)
    if job is None:
        raise NotFound(f"No job '{job_id}'.", param="id")
    if not await settlement.cancel(session, job_id, utcnow()):
        raise Conflict(f"Job '{job_id}' had already ended.", code="job_finished")
    await _audit(session, actor, "job.cancel", "job", job_id, account_id=job.account_id)


# -- the console's sessions ---------------------------------------------------------------------


async def record_sign_in(session: AsyncSession, actor: Principal) -> None:
    await _audit(session, actor, "console.sign_in", "key", actor.key.id)


async def record_sign_out(session: AsyncSession, actor: Principal, when: datetime) -> None:
    """Ends every console session of the key opened until ``when``, on every replica."""
    await repo.set_console_signed_out(session, actor.key.id, when)
    await _audit(session, actor, "console.sign_out", "key", actor.key.id)


async def console_signed_out_at(session: AsyncSession, key_id: str) -> datetime | None:
    return await repo.console_signed_out_at(session, key_id)


# -- the overview -------------------------------------------------------------------------------


CHART_DAYS = 30


@dataclass(frozen=True)
class Overview:
    images_today: int
    images_month: int
    # Images per day from days_from (this month, and at least the last CHART_DAYS days) to today;
    # days without images absent.
    days: list[tuple[date, int]]
    days_from: date
    # Minor units per currency paid this month on recorded invoices.
    revenue_month: dict[str, int]
    accounts: dict[str, int]
    jobs: dict[str, int]
    oldest_queued: Job | None
    workers: dict[str, int]
    billing: BillingOverview
    licenses: list[licensing.LicenseStatus]
    reviews_pending: int
    oldest_review_at: datetime | None


def _nearest_cap_first(status: licensing.LicenseStatus) -> tuple[int, float]:
    fraction = status.fraction
    return (0, -fraction) if fraction is not None else (1, 0.0)


async def overview(session: AsyncSession, settings: Settings, now: datetime) -> Overview:
    today, first = day_start(now), month_start(now)
    since = min(first, today - timedelta(days=CHART_DAYS - 1))
    days = [(row.group, int(row.images)) for row in await aggregate(session, "day", since, today)]
    heartbeat_since = now - timedelta(seconds=settings.worker_stale_seconds)
    workers: dict[str, int] = {}
    for worker in await queue.workers_seen_since(session, heartbeat_since):
        workers[worker.state] = workers.get(worker.state, 0) + 1
    pending, oldest_review = await moderation.review_backlog(session)
    month_begins = datetime.combine(first, datetime.min.time(), UTC)
    return Overview(
        images_today=sum(n for day, n in days if day == today), images_month=sum(n for day, n in days if day >= first),
        days=days, days_from=since,
        revenue_month=await billing.paid_revenue(session, month_begins, next_month(first)),
        accounts=await accounts.account_status_counts(session),
        jobs=await queue.count_by_status(session, [JobStatus.QUEUED.value, JobStatus.RUNNING.value,
                                                   JobStatus.DELIVERING.value]),
        oldest_queued=await repo.oldest_queued_job(session), workers=workers,
        billing=await billing.overview(session, settings, now),
        licenses=sorted(await licensing.statuses(session, now), key=_nearest_cap_first),
        reviews_pending=pending, oldest_review_at=oldest_review,
    )
