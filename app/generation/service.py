"""Generation orchestration on the API side: validate, enqueue, wait, present.

Validation happens before anything is written (like diffusers' ``check_inputs``),
so a bad request leaves no row behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import Principal
from app.config import ModelSpec
from app.db import Database
from app.errors import (
    AppError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    Timeout,
)
from app.generation import image_inputs
from app.generation import loras as lora_rules
from app.generation.catalog import ModelCatalog
from app.generation.encoder_depth import max_clip_skip
from app.generation.loras import ResolvedLora
from app.generation.schemas import (
    GenerationRequest,
)
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.licensing import service as licensing
from app.moderation import Rating, apply_rating_tags
from app.moderation.service import Screening, moderator_for
from app.queue import repository as queue
from app.queue.models import Job, JobStatus
from app.queue.notify import JobEvents, publish_work
from app.quotas import service as quotas
from app.quotas.limits import Limits, effective_limits
from app.quotas.service import RateDecision
from app.retention import erasure
from app.runtime.samplers import resolve_sampler, samplers_for_family
from app.runtime.sizes import check_size
from app.settlement import service as settlement
from app.storage.base import ImageStore

log = logging.getLogger("ponyserve.generation")

# Moderates a request's prompts for one model: its Screening, or the refusal raised.
Screen = Callable[[ModelSpec], Awaitable[Screening]]


def _resolve_size(req: GenerationRequest, spec: ModelSpec) -> tuple[int, int]:
    width, height = spec.defaults.width, spec.defaults.height
    if req.size and req.size != "auto":
        w, _, h = req.size.partition("x")
        width, height = int(w), int(h)
    width = req.width if req.width is not None else width
    height = req.height if req.height is not None else height
    for label, value, lo, hi in (
        ("width", width, spec.min_width, spec.max_width),
        ("height", height, spec.min_height, spec.max_height),
    ):
        param = label if getattr(req, label) is not None else ("size" if req.size else label)
        if value % 8:
            raise InvalidRequest(f"{label} {value} is not a multiple of 8.", code="invalid_size", param=param)
        if not lo <= value <= hi:
            raise InvalidRequest(
                f"{label} {value} is outside model '{spec.name}' limits [{lo}, {hi}].", code="invalid_size",
                param=param,
            )
    problem = check_size(spec, width, height)
    if problem is not None:
        raise InvalidRequest(problem[0].upper() + problem[1:] + ".", code="invalid_size",
                             param="size" if req.size else "width")
    return width, height


def _check_plan(principal: Principal, limits: Limits, *, width: int, height: int, steps: int, n: int) -> None:
    for label, value, limit in (
        ("width", width, limits.max_width), ("height", height, limits.max_height),
        ("steps", steps, limits.max_steps), ("n", n, limits.max_n),
    ):
        if value > limit:
            raise PermissionDenied(
                f"{label} {value} exceeds your plan's limit of {limit} ('{principal.plan.code}').",
                code="plan_limit_exceeded", param=label,
            )


def build_job(principal: Principal, req: GenerationRequest, spec: ModelSpec, limits: Limits, *,
              rating: Rating | None = None, loras: Sequence[ResolvedLora] = (),
              inputs: dict[str, object] | None = None) -> Job:
    """The job a valid request becomes; raises on the first invalid parameter. ``rating`` (from
    moderation) adds Pony rating tags to the revised prompts of models with ``rating_tags``."""
    width, height = _resolve_size(req, spec)
    steps = req.steps if req.steps is not None else spec.defaults.steps
    if steps > spec.max_steps:
        raise InvalidRequest(f"steps {steps} exceeds model '{spec.name}' maximum of {spec.max_steps}.",
                             code="invalid_steps", param="steps")
    try:
        sampler = resolve_sampler(req.sampler or spec.defaults.sampler, family=spec.family)
    except KeyError:
        raise InvalidRequest(
            f"Unknown sampler '{req.sampler}' for model '{spec.name}'. Accepted: "
            f"{', '.join(samplers_for_family(spec.family))}.", code="invalid_sampler", param="sampler",
        ) from None
    # A1111 convention (1 = last layer); the model's configured value when the caller sends none.
    clip_skip = req.clip_skip if req.clip_skip is not None else spec.clip_skip
    depth = max_clip_skip(spec)
    if req.clip_skip is not None and depth is not None and req.clip_skip > depth:
        # Refused here rather than failing in the worker after the job was queued and reserved.
        raise InvalidRequest(f"clip_skip {req.clip_skip} exceeds the {depth} layers of model '{spec.name}' text "
                             "encoder.", code="invalid_clip_skip", param="clip_skip")
    hires: dict[str, object] | None = None
    hires_key = ""
    if req.hires is not None:
        if req.init_image is not None:
            raise InvalidRequest("hires cannot be combined with init_image; ask for the size you want.",
                                 code="invalid_hires", param="hires")
        final_w, final_h = int(width * req.hires.scale) // 8 * 8, int(height * req.hires.scale) // 8 * 8
        if final_w > spec.max_width or final_h > spec.max_height:
            raise InvalidRequest(f"hires output {final_w}x{final_h} exceeds model '{spec.name}' limits "
                                 f"{spec.max_width}x{spec.max_height}.", code="invalid_size", param="hires")
        hr_steps = req.hires.steps if req.hires.steps is not None else steps
        if hr_steps > spec.max_steps:
            raise InvalidRequest(f"hires steps {hr_steps} exceeds model '{spec.name}' maximum of {spec.max_steps}.",
                                 code="invalid_steps", param="hires")
        if int(hr_steps * req.hires.denoise) < 1:
            raise InvalidRequest(f"hires denoise {req.hires.denoise:g} of {hr_steps} steps runs no step.",
                                 code="invalid_hires", param="hires")
        hires = {"base_width": width, "base_height": height, "denoise": req.hires.denoise, "steps": hr_steps,
                 "upscaler": req.hires.upscaler}
        hires_key = f"|hr={width}x{height}:{req.hires.denoise:g}:{hr_steps}:{req.hires.upscaler}"
        width, height = final_w, final_h
    _check_plan(principal, limits, width=width, height=height, n=req.n,
                steps=max(steps, int(str(hires["steps"])) if hires else 0))
    preview_every = req.preview_every or None
    if preview_every is not None and preview_every > steps:
        raise InvalidRequest(f"preview_every {preview_every} is more than this job's {steps} steps, so no preview "
                             f"would ever come; use 1 to {steps}, or 0 for none.", code="invalid_preview_every",
                             param="preview_every")
    strength = image_inputs.check_strength(req, steps)
    guidance = req.guidance_scale if req.guidance_scale is not None else spec.defaults.guidance_scale
    # Seeds of a job are seed, seed+1, … (A1111's convention); keep the last one in range.
    seed = req.seed if req.seed is not None else secrets.randbelow(2**32 - req.n)
    if seed + req.n - 1 > 2**32 - 1:
        raise InvalidRequest("seed + n - 1 must stay below 2^32.", code="invalid_seed", param="seed")
    negative = req.negative_prompt or ""
    revised_prompt, revised_negative = spec.revise_prompt(req.prompt), spec.revise_negative_prompt(req.negative_prompt)
    if rating is not None and spec.rating_tags:
        revised_prompt, revised_negative = apply_rating_tags(revised_prompt, revised_negative, rating)
    return Job(
        id=new_id("gen"), account_id=principal.account.id, api_key_id=principal.key.id,
        status=JobStatus.QUEUED, priority=limits.priority, model=spec.name, license=spec.license,
        prompt=req.prompt, negative_prompt=negative, revised_prompt=revised_prompt,
        revised_negative_prompt=revised_negative, width=width, height=height,
        steps=steps, guidance_scale=guidance, sampler=sampler, seed=seed, n=req.n,
        output_format=req.output_format, request_user=req.user, plan_code=principal.plan.code,
        plan_paid=principal.plan.is_paid,
        clip_skip=clip_skip,
        # Not part of the batch key: previews are per job, so jobs that differ only here still share a call.
        preview_every=preview_every,
        batch_key=f"{spec.name}|{width}x{height}|{steps}|{sampler}|{guidance:g}|{clip_skip}"
                  + lora_rules.batch_key_part(loras) + image_inputs.batch_key_part(inputs, strength)
                  + hires_key,
        loras=[lora.stored() for lora in loras] or None,
        inputs={**inputs, "strength": strength} if inputs else None, hires=hires,
        attempts=0, cancel_requested=False, progress_step=0, created_at=utcnow(),
        request_metadata=dict(req.metadata) if req.metadata else None, store=req.store,
        metadata_mode=principal.key.metadata_mode or "full",
    )


async def submit(
    session: AsyncSession, principal: Principal, req: GenerationRequest, catalog: ModelCatalog, *,
    limits: Limits, max_queue_depth: int, now: datetime, idempotency_key: str | None = None,
    rating: Rating | None = None, screen: Screen | None = None, inputs: dict[str, object] | None = None,
) -> Job:
    """Validates, checks in-flight limits, reserves quota and enqueues — all in the caller's
    transaction, so a refusal anywhere leaves nothing behind. Workers wake when it commits.

    ``screen`` moderates the prompts for another model: a job a licence cap routes to its
    fallback model is screened again for that model (its templates, whether it is NSFW-capable),
    since the caller's screening only covered the model asked for."""
    spec = catalog.get(req.model)
    if not limits.allows_model(spec.name):
        raise PermissionDenied(f"Your plan does not include model '{spec.name}'.", code="model_not_allowed",
                               param="model")
    terms = await licensing.terms_for(session, spec.license, now)
    licensing.check_plan(terms, principal.plan, spec.name)
    loras = await _resolve_loras(session, principal, req, spec, catalog, limits, now)
    job = build_job(principal, req, spec, limits, rating=rating, loras=loras, inputs=inputs)
    job.idempotency_key = idempotency_key
    depth = (await queue.count_by_status(session, [JobStatus.QUEUED]))[JobStatus.QUEUED]
    if depth >= max_queue_depth:
        raise ServiceUnavailable("The queue is full; retry shortly.", code="queue_full",
                                 headers={"Retry-After": "5"})
    # Lock order, everywhere: key row → quota counters → licence lock → licence day row.
    await quotas.check_inflight(session, principal.key, limits)
    await quotas.reserve(session, principal.account, principal.key, job, now)
    if (await licensing.reserve(session, job, terms, now)).outcome == "fallback":
        assert terms is not None and terms.fallback_model is not None
        job = await _route_to_fallback(session, principal, req, catalog, limits, job, terms.fallback_model, now,
                                       rating=rating, screen=screen, inputs=inputs)
    await queue.insert_job(session, job)
    await publish_work(session, job.model)
    return job


async def _resolve_loras(session: AsyncSession, principal: Principal, req: GenerationRequest, spec: ModelSpec,
                         catalog: ModelCatalog, limits: Limits, now: datetime) -> list[ResolvedLora]:
    """The request's LoRAs for ``spec``, each one's licence checked against the plan like a model's."""
    loras = lora_rules.resolve(req.loras, spec, catalog.loras, limits.max_loras)
    for lora in loras:
        terms = await licensing.terms_for(session, lora.spec.license, now)
        licensing.check_plan(terms, principal.plan, lora.spec.name, kind="LoRA", param="loras")
    return loras


async def _route_to_fallback(
    session: AsyncSession, principal: Principal, req: GenerationRequest, catalog: ModelCatalog, limits: Limits,
    original: Job, fallback_model: str, now: datetime, *, rating: Rating | None = None, screen: Screen | None = None,
    inputs: dict[str, object] | None = None,
) -> Job:
    """The licence of the requested model is at its cap: the job runs on the fallback model instead,
    metered against the fallback's licence (one hop only: a capped fallback is refused, not chained)."""
    spec = catalog.get(fallback_model)
    terms = await licensing.terms_for(session, spec.license, now)
    licensing.check_plan(terms, principal.plan, spec.name)
    if inputs and spec.family not in image_inputs.FAMILIES_WITH_IMAGE_INPUTS:
        raise PermissionDenied(f"Model '{original.model}' is at its licence cap and its fallback '{spec.name}' takes "
                               "no init_image.", code="license_cap_reached", param="model")
    if screen is not None:
        # Refuses (and records the incident in its own transaction) before anything is reserved
        # for the fallback; this transaction's reservations roll back with the refusal.
        rating = (await screen(spec)).rating
    loras = await _resolve_loras(session, principal, req, spec, catalog, limits, now)
    job = build_job(principal, req.model_copy(update={"model": spec.name}), spec, limits, rating=rating, loras=loras,
                    inputs=inputs)
    job.id, job.idempotency_key = original.id, original.idempotency_key
    job.quota_day, job.quota_month, job.reservation_state = original.quota_day, original.quota_month, "held"
    job.requested_model, job.requested_license = original.model, original.license
    if (await licensing.reserve(session, job, terms, now)).outcome == "fallback":
        raise PermissionDenied(f"Neither model '{original.model}' nor its fallback '{spec.name}' is within its "
                               "licence cap.", code="license_cap_reached", param="model")
    return job


@dataclass(frozen=True)
class Accepted:
    job: Job
    rate: RateDecision | None
    replayed: bool

    def headers(self) -> dict[str, str]:
        headers = self.rate.headers() if self.rate else {}
        if self.replayed:
            headers["Idempotent-Replayed"] = "true"
        return headers


async def accept(
    db: Database, principal: Principal, req: GenerationRequest, catalog: ModelCatalog, *, endpoint: str,
    max_queue_depth: int, idempotency_key: str | None, store: ImageStore | None = None,
    image_urls: image_inputs.UrlPolicy | None = None,
) -> Accepted:
    """The whole acceptance path of both generation POSTs: rate limit, idempotency, enqueue.

    Each step is its own short transaction: the rate-limit token is spent even when the
    request is then refused, and the idempotency claim is visible to concurrent retries
    (which get 409) while this request is still being accepted.
    """
    _check_store(req, endpoint)
    # Uploads are checked before anything is spent on the request (their bytes decoded off the event loop).
    checked = await image_inputs.check(req, catalog.get(req.model), image_urls or image_inputs.UrlPolicy())
    if checked is not None and store is None:
        raise InvalidRequest("This route takes no init_image.", code="img2img_not_supported", param="init_image")
    req = image_inputs.with_output_size(req, checked)
    now = utcnow()
    limits = effective_limits(principal.account, principal.key)
    async with db.unit_of_work() as session:
        rate = await quotas.take_rate_token(session, principal.key, limits, now)
    try:
        # Before any claim or reservation: a refused prompt leaves no job and costs no quota
        # (its incident is written in the moderator's own transaction).
        moderator = moderator_for(db)
        lora_words = lora_rules.screened_text(req.loras, catalog.loras)
        screening = await moderator.screen(principal, req, catalog.get(req.model), endpoint=endpoint,
                                           extra=lora_words)
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.", code="invalid_idempotency_key",
                                     param="Idempotency-Key")
            fingerprint = quotas.request_fingerprint(endpoint, req.model_dump(mode="json"))
            async with db.unit_of_work() as session:
                original = await quotas.begin_idempotent(session, principal.key, idempotency_key, endpoint,
                                                         fingerprint, now)
            if original is not None:
                async with db.unit_of_work() as session:
                    job = await queue.get_job(session, original)
                assert job is not None
                return Accepted(job=_replayable(job), rate=rate, replayed=True)
        stored = None
        try:
            if checked is not None:
                assert store is not None
                stored = await image_inputs.store(store, checked, req)
            try:
                async with db.unit_of_work() as session:
                    job = await submit(session, principal, req, catalog, limits=limits,
                                       max_queue_depth=max_queue_depth, now=now, idempotency_key=idempotency_key,
                                       rating=screening.rating, inputs=stored,
                                       screen=partial(moderator.screen, principal, req, endpoint=endpoint,
                                                      extra=lora_words))
                    if idempotency_key is not None:
                        await quotas.finish_idempotent(session, principal.key, idempotency_key, job.id)
            except IntegrityError:
                # The jobs table allows one job per idempotency key: another request with this key
                # (one that took over a stale claim, or raced it) created the job first.
                existing = None if idempotency_key is None else await _job_for_key(db, principal, idempotency_key)
                if existing is None or idempotency_key is None:
                    raise
                async with db.unit_of_work() as session:
                    # The claim this request took over now points at the job, for the next retry.
                    await quotas.finish_idempotent(session, principal.key, idempotency_key, existing.id)
                if stored is not None and store is not None:  # the other request's job has its own copies
                    await image_inputs.discard(store, stored)
                return Accepted(job=_replayable(existing), rate=rate, replayed=True)
            except RateLimited as exc:
                if rate is not None and exc.code in quotas.INFLIGHT_CODES:
                    # Refused before anything was queued: the request does not count against the rate.
                    async with db.unit_of_work() as session:
                        await quotas.refund_rate_token(session, principal.key, limits)
                raise
        except BaseException:
            if stored is not None:
                with contextlib.suppress(Exception):  # best effort: the refusal is what the caller needs
                    assert store is not None
                    await image_inputs.discard(store, stored)
            if idempotency_key is not None:
                async with db.unit_of_work() as session:
                    await quotas.abandon_idempotent(session, principal.key, idempotency_key)
            raise
    except AppError as exc:
        if rate is not None:
            exc.headers = {**rate.headers(), **exc.headers}
        raise
    return Accepted(job=job, rate=rate, replayed=False)


def parse_request(fields: Mapping[str, Any], *, rename: Mapping[str, str] | None = None) -> GenerationRequest:
    """A native request from fields another API shape carried (OpenAI multipart, A1111 JSON); a 400 names the
    first bad field, in that shape's own name (``rename``: native → theirs)."""
    try:
        return GenerationRequest(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        native = str(first["loc"][0]) if first.get("loc") else None
        param = (rename or {}).get(native, native) if native else None
        raise InvalidRequest(f"Invalid value for '{param}': {first.get('msg', 'invalid value')}.",
                             code="invalid_value", param=param) from None


def _check_store(req: GenerationRequest, endpoint: str) -> None:
    """``store: false`` keeps nothing once the response is sent, so only a response that carries the
    images themselves can use it: the synchronous OpenAI route with ``b64_json``."""
    if req.store:
        return
    if endpoint != "images.generations":
        raise InvalidRequest("store=false is only for synchronous generations (POST /v1/images/generations): an "
                             "asynchronous job must be kept for you to fetch it.", code="store_not_supported",
                             param="store")
    if req.response_format != "b64_json":
        raise InvalidRequest("store=false keeps no image to link to: use response_format 'b64_json'.",
                             code="store_requires_b64_json", param="response_format")


def _replayable(job: Job) -> Job:
    """The job an Idempotency-Key already made, unless it has been erased: then a retry cannot be given
    its result, and making it again would charge twice, so it is refused."""
    if job.deleted_at is not None:
        raise Conflict(f"The generation this Idempotency-Key made ('{job.id}') was deleted; its result is gone. "
                       "Use a new Idempotency-Key to generate again.", code="generation_deleted")
    return job


async def _job_for_key(db: Database, principal: Principal, idempotency_key: str) -> Job | None:
    async with db.unit_of_work() as session:
        return await queue.job_for_idempotency_key(session, principal.key.id, idempotency_key)


async def get_owned_job(session: AsyncSession, principal: Principal, job_id: str) -> Job:
    job = await queue.get_job(session, job_id)
    # Someone else's job is reported absent, not forbidden: ids must not leak existence. An erased
    # job (deleted, purged, store=false) is absent to its owner too.
    if job is None or job.account_id != principal.account.id or job.deleted_at is not None:
        raise NotFound(f"No generation '{job_id}'.", param="id")
    return job


async def cancel(session: AsyncSession, principal: Principal, job_id: str) -> Job:
    """Cancels the caller's job wherever it is (queued, running, delivering): it ends ``cancelled``
    at once and is not charged. 409 if it had already ended (it may have just finished)."""
    job = await get_owned_job(session, principal, job_id)
    if JobStatus(job.status).is_terminal or not await settlement.cancel(session, job_id, utcnow()):
        refreshed = await queue.get_job(session, job_id)
        assert refreshed is not None
        raise Conflict(f"Generation '{job_id}' has already {refreshed.status}.", code="job_finished")
    refreshed = await queue.get_job(session, job_id)
    assert refreshed is not None
    return refreshed


# The public statuses a listing filters on, and the internal ones each covers.
LISTED_STATUSES: dict[str, tuple[str, ...]] = {
    "queued": (JobStatus.QUEUED,), "running": (JobStatus.RUNNING, JobStatus.DELIVERING),
    "succeeded": (JobStatus.SUCCEEDED,), "failed": (JobStatus.FAILED,), "cancelled": (JobStatus.CANCELLED,),
}


async def list_jobs(session: AsyncSession, principal: Principal, *, limit: int, after: str | None,
                    status: str | None, created_after: datetime | None,
                    metadata: dict[str, str]) -> tuple[list[Job], bool]:
    """A page of the caller's own jobs, newest first, and whether more follow. ``after`` is a job id
    from an earlier page; one the caller cannot see is a 400, never a page of someone else's."""
    cursor = None
    if after is not None:
        cursor = await queue.get_job(session, after)
        # An erased job still marks its place in the order: a page boundary may be deleted meanwhile.
        if cursor is None or cursor.account_id != principal.account.id:
            raise InvalidRequest(f"'after' names no generation of yours: '{after}'.", code="invalid_cursor",
                                 param="after")
    where = queue.JobFilter(statuses=None if status is None else LISTED_STATUSES[status],
                            created_after=created_after, metadata=metadata)
    jobs = list(await queue.list_jobs(session, principal.account.id, limit=limit + 1, after=cursor, where=where))
    return jobs[:limit], len(jobs) > limit


async def delete(db: Database, store: ImageStore, principal: Principal, job_id: str) -> None:
    """Erases the caller's job: cancelled first if unfinished (not charged), its images deleted from
    storage, its prompts wiped, its webhooks dropped; the ledger keeps what was charged. 404 once gone."""
    async with db.unit_of_work() as session:
        await get_owned_job(session, principal, job_id)
        keys = await erasure.erase(session, job_id, utcnow())
        if keys is None:  # erased by a concurrent request (or the purge) since the read above
            raise NotFound(f"No generation '{job_id}'.", param="id")
        await erasure.delete_images(store, keys)


async def discard_unstored(db: Database, store: ImageStore, job_id: str) -> None:
    """After a ``store: false`` response: the job and its images are erased. A failure here is only
    logged — the caller has its answer — and the retention purge erases the job later."""
    try:
        async with db.unit_of_work() as session:
            keys = await erasure.erase(session, job_id, utcnow())
            if keys:
                await erasure.delete_images(store, keys)
    except Exception as exc:
        log.warning("could not erase store=false job %s now (%s); the retention purge will", job_id, exc)


# A waiter re-reads its job at least this often even without a notification (one lost while a
# listener reconnects is already covered by the listener waking every waiter).
RECHECK_SECONDS = 5.0


async def wait_until_finished(
    db: Database, events: JobEvents, job_id: str, timeout: float,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> Job:
    """Waits for the job to end (or the timeout); re-reads the row when woken.

    The subscription is taken before the first read, so a completion committed in between
    still wakes this waiter, and progress notifications do not wake it at all: a synchronous
    caller costs one read per status change, not one per step. The row is also re-read every
    ``RECHECK_SECONDS`` in case a notification never arrives; the client's connection is
    checked every second.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with events.subscribe(job_id, progress=False) as subscription:
        woken, last_read = True, -math.inf
        while True:
            remaining = deadline - loop.time()
            if woken or remaining <= 0 or loop.time() - last_read >= RECHECK_SECONDS:
                async with db.unit_of_work() as session:
                    job = await queue.get_job(session, job_id)
                assert job is not None
                last_read = loop.time()
                if JobStatus(job.status).is_terminal or remaining <= 0:
                    return job
            if disconnected is not None and await disconnected():
                async with db.unit_of_work() as session:
                    await settlement.cancel(session, job_id, utcnow())
                events.job_changed(job_id)
                disconnected = None
            woken = await subscription.wait(min(max(remaining, 0.0), 1.0))


async def wait_for_result(
    db: Database, events: JobEvents, job_id: str, timeout: float, *, headers: dict[str, str] | None = None,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> Job:
    """The synchronous routes' wait (OpenAI-compatible, A1111): the finished job, or 504 after
    ``timeout`` — and then the job is cancelled, so "not charged" is true. If the cancel loses
    because the job finished between the last look and the cancel, the finished job is returned."""
    job = await wait_until_finished(db, events, job_id, timeout, disconnected=disconnected)
    if JobStatus(job.status).is_terminal:
        return job
    async with db.unit_of_work() as session:
        cancelled = await settlement.cancel(session, job_id, utcnow())
        ended = await queue.get_job(session, job_id)
    assert ended is not None
    events.job_changed(job_id)
    if cancelled:
        raise Timeout(f"Generation {job_id} did not finish within {timeout:g}s; it was cancelled and not charged.",
                      headers=headers)
    return ended
