"""What a delivered image costs, as recorded in the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from app.metering.models import UsageEntry
from app.queue.models import Job, JobOutput

# The reference image that one price unit per thousand is measured against.
_REFERENCE_MP_STEPS = 1024 * 1024 / 1_000_000 * 30


def megapixel_steps(width: int, height: int, steps: int) -> float:
    return round(width * height / 1_000_000 * steps, 6)


def price_units(width: int, height: int, steps: int) -> int:
    """Thousandths of a 1024x1024, 30-step image: compute is what an image costs us."""
    return max(1, round(1000 * megapixel_steps(width, height, steps) / _REFERENCE_MP_STEPS))


def ledger_rows(job: Job, outputs: Sequence[JobOutput], *, gpu_seconds: float, now: datetime,
                period_day: date) -> list[UsageEntry]:
    """One row per image, GPU time shared evenly among the job's images, counted in the day
    ``period_day`` (the day the job's reservation was taken in), whenever it is written."""
    per_image = gpu_seconds / max(len(outputs), 1)
    return [
        UsageEntry(
            job_id=job.id, image_id=out.id, api_key_id=job.api_key_id, account_id=job.account_id,
            model=job.model, license=job.license, images=1, width=out.width, height=out.height,
            steps=job.steps, megapixel_steps=megapixel_steps(out.width, out.height, job.steps),
            gpu_seconds=round(per_image, 6), price_units=price_units(out.width, out.height, job.steps),
            plan_code=job.plan_code, plan_paid=job.plan_paid, license_overage=job.license_overage,
            usage_day=period_day, created_at=now,
        )
        for out in outputs
    ]
