"""A claimed batch and its states, and turning its jobs into one runtime call (no I/O here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.queue.models import Job
from app.runtime.encoding import a1111_parameters
from app.runtime.provenance import ImageMetadata, Provenance, metadata_for
from app.runtime.types import GenerationParams, ImagePrompt


@dataclass(frozen=True)
class Slot:
    """Where one image of the pipeline call belongs: which job, which of its n images."""

    job: Job
    index: int

    @property
    def seed(self) -> int:
        return self.job.seed + self.index


def plan_call(jobs: Sequence[Job]) -> tuple[GenerationParams, list[ImagePrompt], list[Slot]]:
    """One pipeline call for all images of jobs that share a batch key."""
    head = jobs[0]
    params = GenerationParams(width=head.width, height=head.height, steps=head.steps,
                              guidance_scale=head.guidance_scale, sampler=head.sampler, clip_skip=head.clip_skip)
    slots = [Slot(job, i) for job in jobs for i in range(job.n)]
    prompts = [ImagePrompt(prompt=s.job.revised_prompt, negative_prompt=s.job.revised_negative_prompt, seed=s.seed)
               for s in slots]
    return params, prompts, slots


def infotext(slot: Slot) -> str:
    job = slot.job
    return a1111_parameters(
        prompt=job.revised_prompt, negative_prompt=job.revised_negative_prompt, steps=job.steps,
        sampler=job.sampler, guidance_scale=job.guidance_scale, seed=slot.seed, width=job.width,
        height=job.height, model=job.model, clip_skip=job.clip_skip,
    )


def image_metadata(slot: Slot) -> ImageMetadata:
    """What this image's file carries, as its key's metadata mode (copied to the job) allows."""
    job = slot.job
    return metadata_for(job.metadata_mode, parameters=infotext(slot),
                        provenance=Provenance(model=job.model, job_id=job.id, index=slot.index))


def storage_key(job: Job, index: int, image_id: str) -> str:
    return f"{job.created_at:%Y/%m/%d}/{job.id}/{index}-{image_id}.{job.output_format}"


class BatchState(StrEnum):
    """Where one claimed batch is; the worker renews the leases of batches that are not yet done."""

    CLAIMED = "claimed"  # claimed, maybe still waiting for companions
    GENERATING = "generating"  # in the pipeline call
    DELIVERING = "delivering"  # encoding, review, storage, settlement
    SETTLED = "settled"  # every job ended (by this worker, or by a cancel or the sweeper)
    ABANDONED = "abandoned"  # its database work failed; its jobs are given back (retried or failed)

    @property
    def done(self) -> bool:
        return self in (BatchState.SETTLED, BatchState.ABANDONED)


_NEXT: dict[BatchState, frozenset[BatchState]] = {
    BatchState.CLAIMED: frozenset({BatchState.GENERATING, BatchState.ABANDONED}),
    BatchState.GENERATING: frozenset({BatchState.DELIVERING, BatchState.SETTLED, BatchState.ABANDONED}),
    BatchState.DELIVERING: frozenset({BatchState.SETTLED, BatchState.ABANDONED}),
    BatchState.SETTLED: frozenset(),
    BatchState.ABANDONED: frozenset(),
}


@dataclass
class Batch:
    """Jobs claimed together and run as one pipeline call, with their explicit state."""

    jobs: list[Job]
    state: BatchState = BatchState.CLAIMED

    @property
    def job_ids(self) -> list[str]:
        return [j.id for j in self.jobs]

    def advance(self, to: BatchState) -> None:
        if to not in _NEXT[self.state]:
            raise RuntimeError(f"batch cannot go from {self.state} to {to}")
        self.state = to

    def keep(self, job_ids: set[str]) -> None:
        """Drops the jobs that are no longer this batch's to finish (cancelled, or taken by the sweeper)."""
        self.jobs = [j for j in self.jobs if j.id in job_ids]
