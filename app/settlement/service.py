"""Every way a job ends goes through here: delivered, failed, cancelled, lost, or an image released by review.

Each function ends (or late-delivers) exactly one job in the caller's transaction, and does all
of it there, so it stands or falls as one: the lifecycle transition (a conditional update that
only one caller can win), the quota and licence settlement, the ledger and billing-outbox rows,
the partner's webhook message (app.webhooks.outbox) and the cross-process notification. A caller
that loses the transition changes nothing.

Lock order, the same in every transaction that takes these locks (the API's acceptance path
included), so no interleaving can deadlock:

    api key row  →  job row  →  quota counters (sorted by key)  →  licence lock  →  licence day row

Settlement takes the job row (its transition), then the job's four quota counters in sorted
order, then its licence day row; it never takes the licence lock (releasing a reservation can
only lower a licence's total). One job per transaction: a transaction never holds the counters
of two accounts, which is what let a worker settling several accounts' jobs deadlock against
the API before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.licensing import service as licensing
from app.metering import repository as ledger
from app.metering.service import ledger_rows
from app.queue import lifecycle
from app.queue.models import Job, JobOutput, JobStatus, OutputStatus
from app.queue.notify import publish_job_changed
from app.quotas import service as quotas
from app.quotas.periods import day_start
from app.webhooks.outbox import EventType, record_job_event

log = logging.getLogger("ponyserve.settlement")

CANCELLED_MESSAGE = "Cancelled by the caller; it was not charged."
WORKER_LOST_MESSAGE = "The worker running this job stopped responding; it was not charged."


async def deliver(session: AsyncSession, job: Job, outputs: Sequence[JobOutput], *, worker_id: str,
                  gpu_seconds: float, now: datetime) -> bool:
    """delivering → succeeded with ``outputs``; False (nothing written) if the job was cancelled or lost.

    Delivered images become usage, ledger rows and (paid plans) billing-outbox rows, counted in
    the period the job's reservation was taken in, and the job gets its ``generation.succeeded``
    webhook message. Withheld images are stored but neither charged nor counted against the
    licence until a moderator approves them (:func:`deliver_approved`); the rest of the
    reservation is released.
    """
    if not await lifecycle.succeed(session, job.id, worker_id=worker_id, now=now, gpu_seconds=round(gpu_seconds, 6)):
        return False
    for output in outputs:
        output.charged = output.status == OutputStatus.DELIVERED
    session.add_all(outputs)
    await session.flush()
    delivered = [o for o in outputs if o.charged]
    assert job.quota_day is not None
    charged_seconds = gpu_seconds * len(delivered) / len(outputs) if outputs else 0.0
    await ledger.append(session, ledger_rows(job, delivered, gpu_seconds=charged_seconds, now=now,
                                             period_day=job.quota_day))
    await quotas.settle_job(session, job.id, len(delivered), now)
    await record_job_event(session, job.id, EventType.SUCCEEDED, now)
    await publish_job_changed(session, job.id)
    return True


async def end_unsuccessfully(session: AsyncSession, job_id: str, *, status: JobStatus, code: str, message: str,
                             now: datetime, from_states: Sequence[JobStatus] = lifecycle.WORKING,
                             worker_id: str | None = None, lease_expired_before: datetime | None = None) -> bool:
    """``from_states`` → failed | cancelled, its whole reservation released; False if the job had moved on."""
    if not await lifecycle.end_unsuccessfully(session, job_id, status=status, code=code, message=message, now=now,
                                              from_states=from_states, worker_id=worker_id,
                                              lease_expired_before=lease_expired_before):
        return False
    await quotas.settle_job(session, job_id, 0, now)
    await record_job_event(session, job_id, EventType.CANCELLED if status == JobStatus.CANCELLED else EventType.FAILED,
                           now)
    await publish_job_changed(session, job_id)
    return True


async def cancel(session: AsyncSession, job_id: str, now: datetime) -> bool:
    """Cancels a job that has not been settled yet, wherever it is (queued, running, delivering).

    It ends ``cancelled`` at once: the reservation is released and a worker still busy with it
    loses its own transitions (it stops at the next step, or discards what it made). False if
    the job had already ended.
    """
    return await end_unsuccessfully(session, job_id, status=JobStatus.CANCELLED, code="cancelled",
                                    message=CANCELLED_MESSAGE, now=now, from_states=lifecycle.CANCELLABLE)


async def recover(session: AsyncSession, job_id: str, *, now: datetime, worker_id: str | None = None,
                  lease_expired_before: datetime | None = None) -> JobStatus | None:
    """A job whose worker is gone (or gave it up): back to ``queued`` while attempts remain, else
    ``failed`` and released. With ``worker_id``, only while that worker holds it; with
    ``lease_expired_before``, only if its lease ran out before then. None if it had moved on."""
    if await lifecycle.retry(session, job_id, worker_id=worker_id, lease_expired_before=lease_expired_before):
        await publish_job_changed(session, job_id)
        return JobStatus.QUEUED
    if await end_unsuccessfully(session, job_id, status=JobStatus.FAILED, code="worker_lost",
                                message=WORKER_LOST_MESSAGE, now=now, worker_id=worker_id,
                                lease_expired_before=lease_expired_before):
        return JobStatus.FAILED
    return None


async def deliver_approved(session: AsyncSession, job: Job, output: JobOutput, *, now: datetime) -> None:
    """A withheld image a moderator approved is delivered now, and settles like any delivery.

    It has no reservation left (the job's was settled when the job succeeded), so it is counted
    in the period of the approval: usage on the account's and key's counters (no limit check:
    the image already exists and the caller is owed it), the licence's day row, and a ledger row
    with its billing-outbox row on paid plans.
    """
    output.status, output.charged = OutputStatus.DELIVERED, True
    await session.flush()
    period = day_start(now)
    await quotas.record_late_usage(session, job, 1, now)
    await licensing.record_late_use(session, job, 1, period)
    per_image_seconds = (job.gpu_seconds or 0.0) / max(job.n, 1)
    await ledger.append(session, ledger_rows(job, [output], gpu_seconds=per_image_seconds, now=now,
                                             period_day=period))
    await publish_job_changed(session, job.id)
