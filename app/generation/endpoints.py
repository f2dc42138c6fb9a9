"""Public generation routes (scope ``generate``)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
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
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from app.generation import image_inputs, presentation, service
from app.generation.schemas import (
    MAX_METADATA_PAIRS,
    GenerationList,
    GenerationRequest,
    ImagesResponse,
    JobOut,
    LoraList,
    LoraOut,
    ModelDefaultsOut,
    ModelLicenseOut,
    ModelLimitsOut,
    ModelList,
    ModelOut,
)
from app.generation.uploads import MAX_UPLOAD_BYTES
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
                                    max_queue_depth=ctx.settings.max_queue_depth, idempotency_key=idempotency_key,
                                    store=ctx.store,
                                    image_urls=image_inputs.UrlPolicy.from_settings(ctx.settings))
    response.headers.update(accepted.headers())
    ctx.events.work_available()
    try:
        job = await service.wait_for_result(ctx.db, ctx.events, accepted.job.id, ctx.settings.max_wait_seconds,
                                            headers=accepted.headers(), disconnected=request.is_disconnected)
        if job.status == JobStatus.SUCCEEDED:
            async with ctx.db.unit_of_work() as session:
                return await ctx.presenter.images(session, job, base_url(request), body.response_format)
        raise GenerationFailed(job.error_message or f"Generation {job.status}.",
                               code=job.error_code or "generation_failed", headers=accepted.headers())
    finally:
        if not body.store:
            # The response carries the bytes (or the failure): nothing of it is kept.
            await service.discard_unstored(ctx.db, ctx.store, accepted.job.id)


@router.post(
    "/v1/images/edits",
    response_model=ImagesResponse,
    responses={413: {"model": ErrorResponse}, **SYNC_GENERATION_ERROR_RESPONSES},
)
async def edit_image(
    caller: GenerateCaller, ctx: ContextDep, request: Request, response: Response,
    image: Annotated[UploadFile, File(description="The image to edit: PNG, JPEG or WebP, up to 4096×4096.")],
    prompt: Annotated[str, Form(min_length=1, max_length=4000, description="What the edited image shows.")],
    mask: Annotated[UploadFile | None, File(description="Fully transparent pixels mark where to edit; the "
                                                        "image's size. Omitted: the image's own transparency.")] = None,
    model: Annotated[str | None, Form(max_length=64)] = None,
    n: Annotated[int, Form(ge=1, le=8)] = 1,
    size: Annotated[str | None, Form(pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")] = None,
    response_format: Annotated[Literal["url", "b64_json"], Form()] = "url",
    user: Annotated[str | None, Form(max_length=200)] = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ImagesResponse:
    """Edit an image (OpenAI Images API `images.edit`, multipart): inpaint where the mask (or the image) is fully
    transparent, at strength 1; with no transparency anywhere, img2img of the whole image at strength 0.75.
    Metered and charged like a generation. Bodies up to 32 MiB."""
    image_bytes = await image.read(MAX_UPLOAD_BYTES + 1)
    mask_bytes = await mask.read(MAX_UPLOAD_BYTES + 1) if mask is not None else None
    if len(image_bytes) > MAX_UPLOAD_BYTES or (mask_bytes is not None and len(mask_bytes) > MAX_UPLOAD_BYTES):
        raise PayloadTooLarge(f"Images are at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.",
                              param="mask" if len(image_bytes) <= MAX_UPLOAD_BYTES else "image")
    init_b64, mask_b64 = await asyncio.to_thread(image_inputs.openai_edit_inputs, image_bytes, mask_bytes)
    body = service.parse_request({"prompt": prompt, "model": model, "n": n, "size": size, "user": user,
                           "response_format": response_format, "init_image": init_b64, "mask": mask_b64,
                           "strength": 1.0 if mask_b64 is not None else None})
    return await create_image(body, caller, ctx, request, response, idempotency_key=idempotency_key)


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
                                    max_queue_depth=ctx.settings.max_queue_depth, idempotency_key=idempotency_key,
                                    store=ctx.store,
                                    image_urls=image_inputs.UrlPolicy.from_settings(ctx.settings))
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


_METADATA_PARAM = re.compile(r"^metadata\[(.*)\]$", re.DOTALL)
_METADATA_FILTER_DOC = {
    "name": "metadata", "in": "query", "style": "deepObject", "explode": True, "required": False,
    "description": f"`metadata[key]=value`: only jobs whose request carried every one of these labels "
                   f"(up to {MAX_METADATA_PAIRS}).",
    "schema": {"type": "object", "maxProperties": MAX_METADATA_PAIRS,
               "propertyNames": {"minLength": 1, "maxLength": 64},
               "additionalProperties": {"type": "string", "maxLength": 512}},
}


def _metadata_filter(request: Request) -> dict[str, str]:
    """The ``metadata[key]=value`` pairs of the query string (a deepObject, which FastAPI cannot declare)."""
    pairs: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            raise InvalidRequest("Filter on labels as metadata[key]=value.", code="invalid_metadata_filter",
                                 param="metadata")
        match = _METADATA_PARAM.match(name)
        if match is None:
            continue
        key = match.group(1)
        if not 1 <= len(key) <= 64 or len(value) > 512:
            raise InvalidRequest("A metadata filter's key is 1–64 characters and its value at most 512.",
                                 code="invalid_metadata_filter", param=name[:80])
        if key in pairs:
            raise InvalidRequest(f"metadata[{key}] is given twice.", code="invalid_metadata_filter",
                                 param=name[:80])
        pairs[key] = value
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidRequest(f"At most {MAX_METADATA_PAIRS} metadata filters.", code="invalid_metadata_filter",
                             param="metadata")
    return pairs


@router.get("/v1/generations", response_model=GenerationList, openapi_extra={"parameters": [_METADATA_FILTER_DOC]},
            responses={400: {"model": ErrorResponse}})
async def list_generations(
    caller: GenerateCaller, ctx: ContextDep, session: SessionDep, request: Request,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    after: Annotated[str | None, Query(min_length=1, max_length=64,
                                       description="A job id: the page starts just after it (a page's `last_id`).")
                     ] = None,
    status: Annotated[Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
                      Query(description="Only jobs in this status.")] = None,
    created_after: Annotated[datetime | None, Query(description="Only jobs created after this instant (ISO 8601 or "
                                                                "Unix seconds; UTC when no offset is given).")
                             ] = None,
) -> GenerationList:
    """Your own jobs, newest first, in OpenAI's list shape; deleted and purged jobs are not listed.

    Page with `after=<last_id>` while `has_more` is true. Filters combine: `status`, `created_after`
    and any number of `metadata[key]=value` labels (all must match)."""
    if created_after is not None and created_after.tzinfo is None:
        created_after = created_after.replace(tzinfo=UTC)
    jobs, has_more = await service.list_jobs(session, caller, limit=limit, after=after, status=status,
                                             created_after=created_after, metadata=_metadata_filter(request))
    data = await ctx.presenter.jobs(session, jobs, base_url(request))
    return GenerationList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                          has_more=has_more)


@router.delete("/v1/generations/{job_id}", status_code=204, response_class=Response,
               responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
async def delete_generation(job_id: str, caller: GenerateCaller, ctx: ContextDep) -> Response:
    """Delete a job: its images (and previews) leave storage, its prompts and labels are wiped, its pending
    webhooks are dropped, and it is gone from `GET` and listings (404). An unfinished job is cancelled first
    and not charged. What was charged stays on your usage and invoice. 404 for a job already deleted."""
    await service.delete(ctx.db, ctx.store, caller, job_id)
    ctx.events.job_changed(job_id)
    return Response(status_code=204)


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


@router.get("/v1/loras", response_model=LoraList)
async def list_loras(caller: GenerateCaller, ctx: ContextDep, session: SessionDep) -> LoraList:
    """LoRAs requests may apply (`loras: [{"name", "weight"}]`, or `<lora:name:weight>` on the A1111 routes):
    the model family each fits, its default weight and trigger words. A LoRA whose licence your plan may not use
    is not listed."""
    now = utcnow()
    listed = []
    for spec in ctx.catalog.loras.specs():
        terms = await licensing.terms_for(session, spec.license, now)
        try:
            licensing.check_plan(terms, caller.plan, spec.name, kind="LoRA", param="loras")
        except PermissionDenied:
            continue
        listed.append(LoraOut(id=spec.name, family=spec.family, default_weight=spec.default_weight,
                              trigger_words=list(spec.trigger_words), license=spec.license,
                              description=spec.description))
    return LoraList(data=listed)
