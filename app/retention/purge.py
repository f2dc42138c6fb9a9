"""The retention purge: finished jobs older than their account's retention are erased.

It runs in every worker (``Worker._sweep``, every ``retention_purge_interval_seconds``), so a
deployment with workers needs no extra process; several workers purging at once is harmless,
because :func:`app.retention.erasure.erase` locks the job and skips one already erased. Each job
is erased in its own transaction, so one job's storage failure holds back only that job, which
the next purge tries again.

Retention is the account's ``retention_hours``, else its plan's; neither set keeps jobs forever.
A ``store: false`` job is erased by the synchronous response that made it; if that response never
got to it (the API process died, or the job ran on after its caller left), the purge erases it
once it has been finished for ``STORE_FALSE_GRACE``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import false, func, select
from sqlalchemy.sql import ColumnElement

from app.accounts.models import Account, Plan
from app.db import Database
from app.errors import ServiceUnavailable
from app.queue.models import Job, JobStatus
from app.retention.erasure import delete_images, erase
from app.storage.base import ImageStore

log = logging.getLogger("ponyserve.retention")

STORE_FALSE_GRACE = timedelta(minutes=10)
_TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _retention() -> ColumnElement[int | None]:
    return func.coalesce(Account.retention_hours, Plan.retention_hours)


async def expired_job_ids(db: Database, now: datetime, *, limit: int) -> list[str]:
    """Up to ``limit`` finished, unerased jobs past their retention (oldest first), and store=false leftovers."""
    async with db.unit_of_work() as session:
        # Few distinct retention values exist (one per plan, a handful of overrides): one indexed
        # range query per value beats date arithmetic that SQLite and Postgres spell differently.
        hours_values = (await session.execute(
            select(_retention()).select_from(Account).join(Plan, Plan.id == Account.plan_id)
            .where(_retention().is_not(None)).distinct()
        )).scalars().all()
        found: list[str] = []
        live = (Job.deleted_at.is_(None), Job.status.in_(_TERMINAL))
        for hours in sorted(h for h in hours_values if h is not None):
            if len(found) >= limit:
                break
            cutoff = now - timedelta(hours=hours)
            found += (await session.execute(
                select(Job.id).join(Account, Account.id == Job.account_id).join(Plan, Plan.id == Account.plan_id)
                .where(*live, _retention() == hours, Job.finished_at < cutoff)
                .order_by(Job.finished_at).limit(limit - len(found))
            )).scalars().all()
        if len(found) < limit:
            found += [job_id for job_id in (await session.execute(
                select(Job.id).where(*live, Job.store == false(), Job.finished_at < now - STORE_FALSE_GRACE)
                .order_by(Job.finished_at).limit(limit - len(found))
            )).scalars().all() if job_id not in found]
        return found


async def purge_expired(db: Database, store: ImageStore, now: datetime, *, limit: int = 200) -> list[str]:
    """Erases up to ``limit`` expired jobs; the ids erased. A job whose images cannot be deleted
    now stays as it was (logged) and is tried again by the next purge; a database failure propagates
    (the worker's loop backs off on it)."""
    erased: list[str] = []
    for job_id in await expired_job_ids(db, now, limit=limit):
        try:
            async with db.unit_of_work() as session:
                keys = await erase(session, job_id, now)
                if keys is None:
                    continue
                await delete_images(store, keys)
        except ServiceUnavailable as exc:  # the store, for this job: the rest may still go
            log.warning("retention purge of %s failed (%s); it is retried by the next purge", job_id, exc)
            continue
        erased.append(job_id)
    if erased:
        log.info("retention purged %d job(s)", len(erased))
    return erased
