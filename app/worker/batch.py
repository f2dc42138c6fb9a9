"""A claimed batch and its states, and turning its jobs into one runtime call (no I/O here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from app.queue.models import Job
from app.runtime.encoding import a1111_parameters
from app.runtime.provenance import ImageMetadata, Provenance, metadata_for
from app.runtime.types import GenerationParams, HiresPass, ImagePrompt, LoraUse

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Slot:
    """Where one image of the pipeline call belongs: which job, which of its n images."""

    job: Job
    index: int

    @property
    def seed(self) -> int:
        return self.job.seed + self.index


# An img2img job's init image and mask (None: plain img2img), fitted to its size (app.worker.image_inputs).
JobImages = tuple["Image.Image", "Image.Image | None"]


def plan_call(jobs: Sequence[Job], lora_path: Callable[[str], str],
              images: Mapping[str, JobImages] | None = None) -> tuple[GenerationParams, list[ImagePrompt], list[Slot]]:
    """One pipeline call for all images of jobs that share a batch key (LoRA set and image inputs included).

    ``lora_path`` names each LoRA's file on this worker; it raises ``RuntimeModelError`` for one this
    worker does not have. ``images`` holds the loaded inputs of img2img jobs, by job id."""
    head = jobs[0]
    loras = tuple(LoraUse(name=name, path=lora_path(name), weight=weight, text_encoder_weight=te_weight)
                  for name, weight, te_weight in job_loras(head))
    strength = float(cast(float, head.inputs["strength"])) if head.inputs else None
    width, height, hires = head.width, head.height, None
    if head.hires:
        # The job's size is the final one; the first pass runs at the size asked for.
        width, height = int(cast(int, head.hires["base_width"])), int(cast(int, head.hires["base_height"]))
        hires = HiresPass(width=head.width, height=head.height, denoise=float(cast(float, head.hires["denoise"])),
                          steps=int(cast(int, head.hires["steps"])), upscaler=str(head.hires["upscaler"]))
    params = GenerationParams(width=width, height=height, steps=head.steps,
                              guidance_scale=head.guidance_scale, sampler=head.sampler, clip_skip=head.clip_skip,
                              loras=loras, strength=strength, hires=hires)
    slots = [Slot(job, i) for job in jobs for i in range(job.n)]
    inputs = images or {}
    prompts = [ImagePrompt(prompt=s.job.revised_prompt, negative_prompt=s.job.revised_negative_prompt, seed=s.seed,
                           init_image=inputs[s.job.id][0] if s.job.id in inputs else None,
                           mask=inputs[s.job.id][1] if s.job.id in inputs else None)
               for s in slots]
    return params, prompts, slots


def job_loras(job: Job) -> list[tuple[str, float, float]]:
    """The job's LoRA set as stored (``app.generation.loras``): (name, weight, text-encoder weight)."""
    return [(str(x["name"]), float(cast(float, x["weight"])), float(cast(float, x["text_encoder_weight"])))
            for x in job.loras or ()]


def _lora_tags(job: Job) -> str:
    # A1111 keeps <lora:…> tags in the prompt of its infotext; clients that read it back expect them there.
    return "".join(f" <lora:{name}:{weight:g}>" if weight == te else f" <lora:{name}:{te:g}:{weight:g}>"
                   for name, weight, te in job_loras(job))


def infotext(slot: Slot) -> str:
    job = slot.job
    return a1111_parameters(
        prompt=job.revised_prompt + _lora_tags(job), negative_prompt=job.revised_negative_prompt, steps=job.steps,
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
