"""Public generation routes (scope ``generate``)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from app.accounts.auth import GenerateCaller, _bearer
from app.accounts.service import authenticate
from app.context import ContextDep, base_url
from app.db import SessionDep
from app.errors import (
    COMMON_ERROR_RESPONSES,
    GENERATION_ERROR_RESPONSES,
    SYNC_GENERATION_ERROR_RESPONSES,
    AuthenticationError,
    ErrorResponse,
    GenerationFailed,
    NotFound,
    PermissionDenied,
)
from app.generation import presentation, service
from app.generation.schemas import (
    GenerationRequest,
    ImagesResponse,
    JobOut,
    ModelDefaultsOut,
    ModelLicenseOut,
    ModelLimitsOut,
    ModelList,
    ModelOut,
)
from app.kit.clock import utcnow
from app.licensing import service as licensing
from app.queue.models import JobStatus
from app.quotas.limits import effective_limits
from app.runtime.encoding import MEDIA_TYPES
from app.runtime.samplers import samplers_for_family

router = APIRouter(tags=["generation"], responses=COMMON_ERROR_RESPONSES)

_STARTED = int(time.time())
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retries with the same key and body return the original result "
                                                "and are not charged again (kept 24 h)."),
]
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})")


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    responses=SYNC_GENERATION_ERROR_RESPONSES,
)
async def create_image(
    body: GenerationRequest, caller: GenerateCaller, ctx: ContextDep, request: Request, response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ImagesResponse:
    """Generate images synchronously (OpenAI Images API compatible).

    The request is queued like any other and the connection is held until the
    images are ready. Disconnecting cancels the job, and a cancelled or failed
    job is not charged. With an `Idempotency-Key`, a retry of the same body gets
    the original images and is not charged again.
    """
    accepted = await service.accept(ctx.db, caller, body, ctx.catalog, endpoint="images.generations",
                                    max_queue_depth=ctx.settings.max_queue_depth, idempotency_key=idempotency_key)
    response.headers.update(accepted.headers())
    ctx.events.work_available()
    job = await service.wait_for_result(ctx.db, ctx.events, accepted.job.id, ctx.settings.max_wait_seconds,
                                        headers=accepted.headers(), disconnected=request.is_disconnected)
    if job.status == JobStatus.SUCCEEDED:
        async with ctx.db.unit_of_work() as session:
            return await ctx.presenter.images(session, job, base_url(request), body.response_format)
    raise GenerationFailed(job.error_message or f"Generation {job.status}.", code=job.error_code or "generation_failed",
                           headers=accepted.headers())


@router.post(
    "/v1/generations",
    status_code=202,
    response_model=JobOut,
    responses={200: {"model": JobOut, "description": "Finished within the Prefer: wait time"},
               **GENERATION_ERROR_RESPONSES},
)
async def create_generation(
    body: GenerationRequest,
    caller: GenerateCaller,
    ctx: ContextDep,
    request: Request,
    prefer: Annotated[str | None, Header(description="'wait=N' holds the request up to N seconds")] = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Queue a generation and return the job at once (202).

    With `Prefer: wait=N` the response waits up to N seconds and comes back 200
    with the finished job if it finishes in time (202 with the job otherwise).
    With an `Idempotency-Key`, a retry of the same body returns the original job.
    """
    accepted = await service.accept(ctx.db, caller, body, ctx.catalog, endpoint="generations",
                                    max_queue_depth=ctx.settings.max_queue_depth, idempotency_key=idempotency_key)
    ctx.events.work_available()
    job = accepted.job
    headers = {"Location": f"/v1/generations/{job.id}", **accepted.headers()}
    match = _PREFER_WAIT.search(prefer or "")
    if match:
        wait = min(float(match.group(1)), ctx.settings.max_wait_seconds)
        job = await service.wait_until_finished(ctx.db, ctx.events, job.id, wait)
        headers["Preference-Applied"] = f"wait={match.group(1)}"
    async with ctx.db.unit_of_work() as session:
        view = await ctx.presenter.job(session, job, base_url(request))
    status = 200 if JobStatus(job.status).is_terminal else 202
    return JSONResponse(view.model_dump(mode="json"), status_code=status, headers=headers)


@router.get("/v1/generations/{job_id}", response_model=JobOut, responses={404: {"model": ErrorResponse}})
async def get_generation(job_id: str, caller: GenerateCaller, ctx: ContextDep, session: SessionDep,
                         request: Request) -> JobOut:
    """The job's status, progress, outputs (with signed image URLs), usage and error."""
    job = await service.get_owned_job(session, caller, job_id)
    return await ctx.presenter.job(session, job, base_url(request))


@router.post("/v1/generations/{job_id}/cancel", response_model=JobOut,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
async def cancel_generation(job_id: str, caller: GenerateCaller, ctx: ContextDep, session: SessionDep,
                            request: Request) -> JobOut:
    """Cancel a job: a queued one at once, a running one at its next step. Cancelled jobs are not charged."""
    job = await service.cancel(session, caller, job_id)
    ctx.events.job_changed(job_id)
    return await ctx.presenter.job(session, job, base_url(request))


@router.get(
    "/v1/images/{image_id}",
    response_class=Response,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The image bytes"},
               404: {"model": ErrorResponse}},
)
async def get_image(
    image_id: str,
    ctx: ContextDep,
    session: SessionDep,
    request: Request,
    expires: Annotated[int | None, Query(description="From a signed URL")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="From a signed URL")] = None,
) -> Response:
    """Image bytes: with the owner's key, or through the signed URL a generation response gave.

    A signed URL works until it expires, and only while the account that made the image is active and the
    key that made it is not revoked: after a suspension or a revocation it answers `403 image_link_revoked`.
    A link that is malformed, tampered with or expired answers `401 invalid_signature`.

    With object storage and `PONYSERVE_STORAGE_REDIRECT`, the answer is `307` to a presigned bucket URL that
    expires with the signed link (or after 300 s for a request made with a key)."""
    # Store calls block (disk or network): in a thread, never on the event loop.
    redirect_ttl = 300
    if expires is not None and sig is not None:
        if not ctx.presenter.signer.verify(image_id, expires, sig):
            raise AuthenticationError("The image link is invalid or has expired.", code="invalid_signature")
        output = await presentation.image_by_id(session, image_id)
        redirect_ttl = max(1, expires - int(time.time()))
    else:
        bearer = await _bearer(request)
        caller = await authenticate(session, bearer.credentials if bearer else None)
        output = await presentation.image_for_owner(session, caller, image_id)
    key = output.storage_key
    if ctx.settings.storage_redirect:
        location = await asyncio.to_thread(ctx.store.presigned_url, key, redirect_ttl)
        if location is not None:
            if not await asyncio.to_thread(ctx.store.exists, key):
                raise NotFound(f"Image '{image_id}' is no longer stored.", param="id")
            return Response(status_code=307, headers={"Location": location, "Cache-Control": "private, no-store"})
    try:
        data = await asyncio.to_thread(ctx.store.get, key)
    except FileNotFoundError:
        raise NotFound(f"Image '{image_id}' is no longer stored.", param="id") from None
    return Response(data, media_type=MEDIA_TYPES[output.format],
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/models", response_model=ModelList)
async def list_models(caller: GenerateCaller, ctx: ContextDep, session: SessionDep) -> ModelList:
    """Models this key may use, with their defaults, limits, samplers and the licence terms that matter to a
    caller (OpenAI models-list shape)."""
    limits = effective_limits(caller.account, caller.key)
    now = utcnow()
    models = []
    for spec in ctx.catalog.specs():
        if not limits.allows_model(spec.name):
            continue
        terms = await licensing.terms_for(session, spec.license, now)
        try:
            licensing.check_plan(terms, caller.plan, spec.name)
        except PermissionDenied:
            continue
        models.append((spec, terms))
    return ModelList(data=[
        ModelOut(
            id=spec.name, created=_STARTED, family=spec.family, description=spec.description, license=spec.license,
            license_terms=None if terms is None else ModelLicenseOut(
                id=terms.id, name=terms.name, url=terms.url, monetization_allowed=terms.monetization_allowed,
                monthly_image_cap=terms.monthly_image_cap, at_cap=terms.at_cap, fallback_model=terms.fallback_model),
            defaults=ModelDefaultsOut(**spec.defaults.model_dump()),
            limits=ModelLimitsOut(min_width=spec.min_width, max_width=spec.max_width, min_height=spec.min_height,
                                  max_height=spec.max_height, max_steps=spec.max_steps),
            samplers=samplers_for_family(spec.family), prompt_prefix=spec.prompt_prefix,
            prompt_suffix=spec.prompt_suffix,
        )
        for spec, terms in models
    ])
