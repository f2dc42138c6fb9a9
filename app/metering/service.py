"""What a delivered image costs, as recorded in the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import cast

from app.metering.models import UsageEntry
from app.queue.models import Job, JobOutput

# The reference image that one price unit per thousand is measured against.
_REFERENCE_MP_STEPS = 1024 * 1024 / 1_000_000 * 30


def megapixel_steps(width: int, height: int, steps: int) -> float:
    return round(width * height / 1_000_000 * steps, 6)


def price_units(width: int, height: int, steps: int) -> int:
    """Thousandths of a 1024x1024, 30-step image: compute is what an image costs us."""
    return price_units_for(megapixel_steps(width, height, steps))


def job_megapixel_steps(job: Job) -> float:
    """The work one of the job's images took, in megapixel-steps: the denoising steps that actually ran, at the
    size they ran at. img2img runs int(steps × strength) steps; hires. fix adds its second pass at the final size.
    (What ``usage`` shows, the ledger records and Stripe bills, through ``price_units_for``.)"""
    steps = job.steps
    if job.inputs and job.inputs.get("strength") is not None:
        steps = max(1, int(job.steps * float(cast(float, job.inputs["strength"]))))
    if not job.hires:
        return megapixel_steps(job.width, job.height, steps)
    base = megapixel_steps(int(cast(int, job.hires["base_width"])), int(cast(int, job.hires["base_height"])), steps)
    second = max(1, int(int(cast(int, job.hires["steps"])) * float(cast(float, job.hires["denoise"]))))
    return round(base + megapixel_steps(job.width, job.height, second), 6)


def price_units_for(mp_steps: float) -> int:
    return max(1, round(1000 * mp_steps / _REFERENCE_MP_STEPS))


def ledger_rows(job: Job, outputs: Sequence[JobOutput], *, gpu_seconds: float, now: datetime,
                period_day: date) -> list[UsageEntry]:
    """One row per image, GPU time shared evenly among the job's images, counted in the day
    ``period_day`` (the day the job's reservation was taken in), whenever it is written."""
    per_image = gpu_seconds / max(len(outputs), 1)
    work = job_megapixel_steps(job)
    return [
        UsageEntry(
            job_id=job.id, image_id=out.id, api_key_id=job.api_key_id, account_id=job.account_id,
            model=job.model, license=job.license, images=1, width=out.width, height=out.height,
            steps=job.steps, megapixel_steps=work, gpu_seconds=round(per_image, 6), price_units=price_units_for(work),
            plan_code=job.plan_code, plan_paid=job.plan_paid, license_overage=job.license_overage,
            usage_day=period_day, created_at=now,
        )
        for out in outputs
    ]
