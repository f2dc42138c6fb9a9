"""All SQL of the job queue.

Claiming is a two-step, row-locking affair on Postgres (``FOR UPDATE SKIP LOCKED``
so workers never wait on each other). State changes are not here: they are the
transitions of ``app.queue.lifecycle``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.queue import lifecycle
from app.queue.models import Job, JobOutput, JobStatus, OutputStatus, Worker


async def insert_job(session: AsyncSession, job: Job) -> None:
    session.add(job)
    await session.flush()


async def get_job(session: AsyncSession, job_id: str) -> Job | None:
    return await session.get(Job, job_id, populate_existing=True)


async def job_for_idempotency_key(session: AsyncSession, api_key_id: str, idempotency_key: str) -> Job | None:
    stmt = select(Job).where(Job.api_key_id == api_key_id, Job.idempotency_key == idempotency_key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def outputs_of(session: AsyncSession, job_id: str, *, include_withheld: bool = False) -> Sequence[JobOutput]:
    """The job's images in order. Only deliverable ones unless ``include_withheld``: a caller that
    serves bytes (A1111 txt2img, for one) can never hand out an image moderation holds back."""
    stmt = select(JobOutput).where(JobOutput.job_id == job_id)
    if not include_withheld:
        stmt = stmt.where(JobOutput.status == OutputStatus.DELIVERED)
    return (await session.execute(stmt.order_by(JobOutput.index))).scalars().all()


async def outputs_of_jobs(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, list[JobOutput]]:
    """Every image of each job (withheld ones included), in order: one query for a page of jobs."""
    found: dict[str, list[JobOutput]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        stmt = select(JobOutput).where(JobOutput.job_id.in_(job_ids)).order_by(JobOutput.job_id, JobOutput.index)
        for output in (await session.execute(stmt)).scalars():
            found[output.job_id].append(output)
    return found


@dataclass(frozen=True)
class JobFilter:
    """What a listing asks for: statuses (internal ones), created after, and metadata pairs that must all match."""

    statuses: Sequence[str] | None = None
    created_after: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def _metadata_equals(session: AsyncSession, key: str, value: str) -> ColumnElement[bool]:
    """The job's label ``key`` is ``value``, with both bound as parameters whatever characters they hold.

    Postgres's ``->>`` takes the key as a parameter. SQLite's JSON path operators spell the key
    inside a path string, where quotes, backslashes and non-ASCII keys silently stop matching, so
    there the pairs are read through ``json_each`` instead.
    """
    if session.get_bind().dialect.name == "sqlite":
        pairs = func.json_each(Job.request_metadata).table_valued("key", "value").alias("label")
        return exists(select(1).select_from(pairs).where(pairs.c.key == key, pairs.c.value == value))
    return Job.request_metadata[key].as_string() == value


async def list_jobs(session: AsyncSession, account_id: str, *, limit: int, after: Job | None,
                    where: JobFilter) -> Sequence[Job]:
    """The account's unerased jobs, newest first, from just past ``after``; up to ``limit``.

    Ordered by (created_at, id), both descending, so the cursor is exact even when jobs share a
    timestamp; ``ix_jobs_account_created`` serves it.
    """
    stmt = select(Job).where(Job.account_id == account_id, Job.deleted_at.is_(None))
    if after is not None:
        stmt = stmt.where(or_(Job.created_at < after.created_at,
                              and_(Job.created_at == after.created_at, Job.id < after.id)))
    if where.statuses is not None:
        stmt = stmt.where(Job.status.in_(where.statuses))
    if where.created_after is not None:
        stmt = stmt.where(Job.created_at > where.created_after)
    for key, value in where.metadata.items():
        stmt = stmt.where(_metadata_equals(session, key, value))
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def get_output(session: AsyncSession, image_id: str) -> tuple[JobOutput, Job] | None:
    """The image and its job; None if either is unknown or the job was erased (deleted or purged)."""
    stmt = (select(JobOutput, Job).join(Job, Job.id == JobOutput.job_id)
            .where(JobOutput.id == image_id, Job.deleted_at.is_(None)))
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def queue_position(session: AsyncSession, job: Job) -> int:
    """How many queued jobs run before this one (0 = next)."""
    ahead = or_(
        Job.priority > job.priority,
        and_(Job.priority == job.priority, Job.created_at < job.created_at),
        and_(Job.priority == job.priority, Job.created_at == job.created_at, Job.id < job.id),
    )
    stmt = select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED, ahead)
    return int((await session.execute(stmt)).scalar_one())


async def count_by_status(session: AsyncSession, statuses: Sequence[str]) -> dict[str, int]:
    stmt = select(Job.status, func.count()).where(Job.status.in_(statuses)).group_by(Job.status)
    counts = {s: 0 for s in statuses}
    counts.update({status: int(n) for status, n in (await session.execute(stmt)).all()})
    return counts


async def claim_batch(
    session: AsyncSession,
    *,
    worker_id: str,
    models: Sequence[str],
    max_images: int,
    now: datetime,
    lease_until: datetime,
    loaded: Sequence[str] = (),
    affinity: timedelta = timedelta(0),
) -> list[Job]:
    """Claims the highest-priority queued job this worker can serve and compatible companions.

    Companions share the head's batch key (same model, size, steps, sampler, guidance)
    and together stay within ``max_images``. Within one priority, jobs for the ``loaded``
    models come before older jobs for models this worker would have to load, unless those
    have waited ``affinity`` already: a worker that has a model in memory takes its jobs, and
    one that has not leaves them a moment to a worker that has, rather than evicting a model
    to load another.
    """
    preferred = case((or_(Job.model.in_(loaded), Job.created_at <= now - affinity), 0), else_=1)
    head = (
        await session.execute(
            select(Job.id, Job.batch_key, Job.n).where(_QUEUED, Job.model.in_(models))
            .order_by(Job.priority.desc(), preferred, Job.created_at, Job.id)
            .limit(1).with_for_update(skip_locked=True)
        )
    ).first()
    if head is None:
        return []
    chosen = [head.id, *await _companions(session, head.batch_key, max_images - head.n, exclude=head.id)]
    return await _claim(session, chosen, worker_id=worker_id, now=now, lease_until=lease_until)


async def claim_companions(
    session: AsyncSession,
    *,
    worker_id: str,
    batch_key: str,
    max_images: int,
    now: datetime,
    lease_until: datetime,
) -> list[Job]:
    """Claims more queued jobs with ``batch_key``, within ``max_images`` images, for a batch
    already claimed and still waiting for companions."""
    chosen = await _companions(session, batch_key, max_images)
    return await _claim(session, chosen, worker_id=worker_id, now=now, lease_until=lease_until) if chosen else []


_QUEUED = Job.status == JobStatus.QUEUED
_CLAIM_ORDER = (Job.priority.desc(), Job.created_at, Job.id)


async def _companions(session: AsyncSession, batch_key: str, room: int, *, exclude: str | None = None) -> list[str]:
    """Ids of queued jobs with ``batch_key`` in priority order whose images fit in ``room``, row-locked."""
    if room <= 0:
        return []
    condition = and_(_QUEUED, Job.batch_key == batch_key)
    if exclude is not None:
        condition = and_(condition, Job.id != exclude)
    rows = await session.execute(
        select(Job.id, Job.n).where(condition).order_by(*_CLAIM_ORDER).limit(room).with_for_update(skip_locked=True)
    )
    chosen: list[str] = []
    for job_id, n in rows.all():
        if n <= room:
            chosen.append(job_id)
            room -= n
    return chosen


async def _claim(
    session: AsyncSession, chosen: list[str], *, worker_id: str, now: datetime, lease_until: datetime
) -> list[Job]:
    return await lifecycle.claim(session, chosen, worker_id=worker_id, now=now, lease_until=lease_until)


async def set_progress(
    session: AsyncSession, job_ids: Sequence[str], step: int, *, worker_id: str,
    previews: Mapping[str, tuple[int, str]] | None = None,
) -> set[str]:
    """The batch's step on all its running jobs, and each new preview ``{job_id: (step, base64 JPEG)}``
    on its own job, in one statement whatever the number of jobs and previews. Returns the ids of
    the jobs this worker is still generating: any other was cancelled or taken from it, so the
    watcher needs no second query."""
    values: dict[str, Any] = {"progress_step": step}
    if previews:
        # CASE keyed on the id keeps it one UPDATE: jobs without a new preview keep their own.
        values["preview"] = case({job_id: b64 for job_id, (_, b64) in previews.items()}, value=Job.id,
                                 else_=Job.preview)
        values["preview_step"] = case({job_id: at for job_id, (at, _) in previews.items()}, value=Job.id,
                                      else_=Job.preview_step)
    rows = await session.execute(
        update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING, Job.worker_id == worker_id)
        .values(**values).returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return set(rows.scalars().all())


async def still_generating(session: AsyncSession, job_ids: Sequence[str], *, worker_id: str) -> set[str]:
    """The ids of ``job_ids`` this worker is still generating (the others were cancelled or lost)."""
    stmt = select(Job.id).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING, Job.worker_id == worker_id)
    return set((await session.execute(stmt)).scalars().all())


async def abandoned_job_ids(session: AsyncSession, *, now: datetime, worker_id: str | None, limit: int) -> list[str]:
    """Working jobs whose lease expired before ``now`` or, with ``worker_id``, all that worker's working jobs."""
    condition = and_(Job.status.in_(lifecycle.WORKING),
                     Job.lease_expires_at < now if worker_id is None else Job.worker_id == worker_id)
    stmt = select(Job.id).where(condition).order_by(Job.id).limit(limit)
    return list((await session.execute(stmt)).scalars().all())


async def upsert_worker(session: AsyncSession, worker: Worker) -> None:
    await session.merge(worker)


async def set_worker_state(session: AsyncSession, worker_id: str, state: str) -> None:
    await session.execute(update(Worker).where(Worker.id == worker_id).values(state=state)
                          .execution_options(synchronize_session=False))


async def workers_seen_since(session: AsyncSession, since: datetime) -> Sequence[Worker]:
    stmt = select(Worker).where(Worker.heartbeat_at >= since, Worker.state != "stopped")
    return (await session.execute(stmt)).scalars().all()
