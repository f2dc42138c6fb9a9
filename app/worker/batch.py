"""Turning claimed jobs into one runtime call and its results back into rows (no I/O here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.queue.models import Job
from app.runtime.encoding import a1111_parameters
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


def storage_key(job: Job, index: int, image_id: str) -> str:
    return f"{job.created_at:%Y/%m/%d}/{job.id}/{index}-{image_id}.{job.output_format}"
