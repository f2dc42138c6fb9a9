"""How jobs and images look from outside: the job body every route and webhook shows, image responses,
and which images a caller or a signed link may fetch.

Kept apart from the orchestration in ``app.generation.service`` so that settlement (which writes
webhook messages carrying the job's body) can render a job without depending on the API's
acceptance path.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.accounts.service import Principal
from app.errors import Conflict, NotFound, PermissionDenied
from app.generation.schemas import (
    ImageData,
    ImagesResponse,
    JobError,
    JobOut,
    JobParameters,
    LoraApplied,
    OutputOut,
    Progress,
    UsageBlock,
)
from app.metering.service import job_megapixel_steps, price_units_for
from app.queue import repository as queue
from app.queue.models import Job, JobOutput, JobStatus, OutputStatus
from app.runtime.preview import PREVIEW_MEDIA_TYPE
from app.storage.base import ImageStore
from app.storage.signing import UrlSigner


def preview_data_url(job: Job) -> str | None:
    """The running job's newest preview as a ``data:`` URL an ``<img>`` can show; None if it has none."""
    if job.status != JobStatus.RUNNING or job.preview is None:
        return None
    return f"data:{PREVIEW_MEDIA_TYPE};base64,{job.preview}"


def _usage(job: Job, outputs: Sequence[JobOutput]) -> UsageBlock:
    charged = sum(1 for o in outputs if o.charged) if job.status == JobStatus.SUCCEEDED else 0
    work = job_megapixel_steps(job)
    return UsageBlock(images=charged, megapixel_steps=round(work * charged, 6),
                      price_units=price_units_for(work) * charged,
                      gpu_seconds=job.gpu_seconds)


class Presenter:
    """Turns rows into response bodies; knows the public base URL and signs image links."""

    def __init__(self, signer: UrlSigner, store: ImageStore) -> None:
        self.signer = signer
        self.store = store

    def image_url(self, base_url: str, image_id: str) -> str:
        return f"{base_url.rstrip('/')}/v1/images/{image_id}?{self.signer.query(image_id)}"

    async def job(self, session: AsyncSession, job: Job, base_url: str) -> JobOut:
        outputs = (await queue.outputs_of(session, job.id, include_withheld=True)
                   if job.status == JobStatus.SUCCEEDED else [])
        position = await queue.queue_position(session, job) if job.status == JobStatus.QUEUED else None
        return self._render(job, outputs, position, base_url)

    async def jobs(self, session: AsyncSession, jobs: Sequence[Job], base_url: str) -> list[JobOut]:
        """A page of jobs as ``job`` shows each, their images read in one query rather than one per job."""
        outputs = await queue.outputs_of_jobs(session, [j.id for j in jobs if j.status == JobStatus.SUCCEEDED])
        return [self._render(job, outputs.get(job.id, []),
                             await queue.queue_position(session, job) if job.status == JobStatus.QUEUED else None,
                             base_url)
                for job in jobs]

    def _render(self, job: Job, outputs: Sequence[JobOutput], position: int | None, base_url: str) -> JobOut:
        preview = preview_data_url(job)
        return JobOut(
            id=job.id, status=JobStatus(job.status).public,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            queue_position=position,
            progress=Progress(step=job.progress_step, total=job.steps, preview=preview,
                              preview_step=job.preview_step if preview is not None else None),
            parameters=JobParameters(
                prompt=job.prompt, negative_prompt=job.negative_prompt, revised_prompt=job.revised_prompt,
                revised_negative_prompt=job.revised_negative_prompt, model=job.model, n=job.n, width=job.width,
                height=job.height, steps=job.steps, guidance_scale=job.guidance_scale, sampler=job.sampler,
                seed=job.seed, output_format=job.output_format,
                loras=[LoraApplied.model_validate(lora) for lora in job.loras or ()],
            ),
            outputs=[
                OutputOut(id=o.id, url=None if o.withheld else self.image_url(base_url, o.id), seed=o.seed,
                          width=o.width, height=o.height, format=o.format, revised_prompt=job.revised_prompt,
                          status=o.status)
                for o in outputs
            ],
            usage=_usage(job, outputs),
            error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            metadata=dict(job.request_metadata or {}),
        )

    async def images(
        self, session: AsyncSession, job: Job, base_url: str, response_format: str
    ) -> ImagesResponse:
        outputs = await queue.outputs_of(session, job.id, include_withheld=True)
        data = []
        for out in outputs:
            item = ImageData(id=out.id, revised_prompt=job.revised_prompt, seed=out.seed, status=out.status)
            # A withheld or removed image is listed with its status, never with its bytes or a link.
            if not out.withheld and response_format == "b64_json":
                try:
                    data_bytes = await asyncio.to_thread(self.store.get, out.storage_key)
                except FileNotFoundError:
                    # Erased between the job's end and this read: a store=false job whose first response
                    # already took it, replayed by a concurrent retry with the same Idempotency-Key.
                    raise Conflict(f"The images of generation '{job.id}' are no longer stored.",
                                   code="generation_deleted") from None
                item.b64_json = base64.b64encode(data_bytes).decode()
            elif not out.withheld:
                item.url = self.image_url(base_url, out.id)
            data.append(item)
        return ImagesResponse(id=job.id, created=int(job.created_at.timestamp()), model=job.model, data=data,
                              usage=_usage(job, outputs))


def _servable(output: JobOutput) -> JobOutput:
    if output.status == OutputStatus.WITHHELD:
        raise PermissionDenied(f"Image '{output.id}' is withheld pending moderation review.", code="image_withheld",
                               param="id")
    if output.status == OutputStatus.REMOVED:
        raise NotFound(f"Image '{output.id}' was removed by moderation.", code="image_removed", param="id")
    return output


async def image_for_owner(session: AsyncSession, principal: Principal, image_id: str) -> JobOutput:
    found = await queue.get_output(session, image_id)
    if found is None or found[1].account_id != principal.account.id:
        raise NotFound(f"No image '{image_id}'.", param="id")
    return _servable(found[0])


async def image_by_id(session: AsyncSession, image_id: str) -> JobOutput:
    """The image behind a signed link, which works only while the job's account is active and its key unrevoked.

    A link carries no key of its own, so without this check it would outlive a suspension or a
    revocation by its whole lifetime; ``403 image_link_revoked`` then says why it stopped working.
    """
    found = await queue.get_output(session, image_id)
    if found is None:
        raise NotFound(f"No image '{image_id}'.", param="id")
    output, job = found
    account = await accounts_repo.account_by_id(session, job.account_id)
    key = await accounts_repo.key_by_id(session, job.api_key_id)
    if account is None or account.status != "active" or key is None or key.revoked_at is not None:
        raise PermissionDenied("This image link no longer works: the account was suspended or the API key that "
                               "made the image was revoked.", code="image_link_revoked", param="id")
    return _servable(output)
