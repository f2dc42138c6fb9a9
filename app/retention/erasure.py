"""Erasing a job: what an owner's deletion, a retention purge and ``store: false`` all come down to.

The job's pixels and words go; its money records stay. The row itself is kept (the ledger and
its billing-outbox rows point at it and at its outputs, and the idempotency key must keep
refusing to make the job twice), but its prompts, end-user id, labels and preview are wiped,
``deleted_at`` is set and every read path treats it as absent. Webhook messages, whose bodies
carry the prompts, are dropped with their deliveries; a pending moderation review is
withdrawn. An unfinished job is cancelled first, through settlement, so it is not charged.

The image bytes are deleted *before* the transaction commits, by :func:`delete_images` in the
caller's transaction: if the store fails, the erasure rolls back and can be asked for again; if
the commit fails after the bytes went, the job still reads as present with no images and a
retry finishes it (deleting a missing object is a no-op). Either way nothing is left behind
that the caller was told is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ServiceUnavailable
from app.moderation.models import ModerationReview
from app.queue.models import Job, JobOutput, JobStatus, input_storage_keys
from app.settlement import service as settlement
from app.storage.base import ImageStore
from app.webhooks.outbox import forget_job

log = logging.getLogger("ponyserve.retention")

WITHDRAWN = "withdrawn"  # a review whose image its owner deleted: nothing left to decide
STORAGE_RETRY_AFTER_SECONDS = 5


async def erase(session: AsyncSession, job_id: str, now: datetime) -> list[str] | None:
    """Erases the job in the caller's transaction; the storage keys of its images, which the caller
    deletes (:func:`delete_images`) before committing. None if there is no such job or it is already erased.

    The job row is locked first (it is the first lock settlement takes too), so a worker settling
    the job at the same moment either commits before (and its images are erased here) or loses
    its transition to the cancel (and discards its own uploads).
    """
    job = (await session.execute(
        select(Job).where(Job.id == job_id).with_for_update().execution_options(populate_existing=True)
    )).scalar_one_or_none()
    if job is None or job.deleted_at is not None:
        return None
    if not JobStatus(job.status).is_terminal:
        await settlement.cancel(session, job_id, now)
        await session.refresh(job)
    keys = list((await session.execute(
        select(JobOutput.storage_key).where(JobOutput.job_id == job_id).order_by(JobOutput.index)
    )).scalars().all())
    # An img2img job's uploads (init image, mask) are the caller's pixels too.
    keys += input_storage_keys(job.inputs)
    job.prompt = job.negative_prompt = job.revised_prompt = job.revised_negative_prompt = ""
    job.request_user, job.request_metadata = None, None
    job.preview, job.preview_step = None, None
    job.deleted_at = now
    await session.execute(update(ModerationReview).where(ModerationReview.job_id == job_id,
                                                         ModerationReview.status == "pending")
                          .values(status=WITHDRAWN, decided_at=now, note="deleted by its owner or by retention"))
    await forget_job(session, job_id)
    await session.flush()
    return keys


async def delete_images(store: ImageStore, keys: Sequence[str]) -> None:
    """Deletes the bytes under ``keys`` (off the event loop); 503 ``storage_unavailable`` if the store fails,
    so the erasure around it rolls back rather than claiming images gone that are still stored."""
    try:
        for key in keys:
            await asyncio.to_thread(store.delete, key)
    except Exception as exc:
        log.warning("image store unavailable while deleting %d image(s): %s", len(keys), exc)
        raise ServiceUnavailable("The image store is unavailable; nothing was deleted. Try again shortly.",
                                 code="storage_unavailable",
                                 headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)}) from exc
