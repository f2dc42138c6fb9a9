"""Moderation routes: the artist opt-out registry (scope ``admin``) and incidents, the image
review queue and the audit log (scope ``moderator``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response

from app.accounts.auth import AdminCaller, ModeratorCaller
from app.context import ContextDep, base_url
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, ErrorResponse, InvalidRequest, NotFound
from app.kit.pagination import PageDep
from app.moderation import service
from app.moderation.models import ModerationReview
from app.moderation.schemas import (
    AuditEntryOut,
    AuditList,
    IncidentList,
    IncidentOut,
    OptOutCreate,
    OptOutImportResult,
    OptOutList,
    OptOutOut,
    ReviewDecision,
    ReviewList,
    ReviewOut,
    ReviewStatus,
)
from app.runtime.encoding import MEDIA_TYPES

router = APIRouter(prefix="/admin", responses=COMMON_ERROR_RESPONSES)
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
_DECIDE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse, "description": "The review was already decided"},
}
_CSV_TYPES = ("text/csv", "application/csv", "text/plain")

IncidentCategory = Literal["csam", "artist_optout", "blocklist", "rating_violation"]


# -- opt-out registry (admin) -----------------------------------------------------------------


@router.get("/optouts", response_model=OptOutList, tags=["moderation"])
async def list_optouts(
    _: AdminCaller, session: SessionDep, page: PageDep,
    include_deleted: Annotated[bool, Query(description="Also list deleted entries")] = False,
) -> OptOutList:
    """The artist opt-out registry, oldest entry first, with its change counter."""
    rows, revision = await service.list_optouts(session, include_deleted=include_deleted, limit=page.limit,
                                                offset=page.offset)
    return OptOutList(data=[OptOutOut.model_validate(r) for r in rows], revision=revision, limit=page.limit,
                      offset=page.offset)


@router.post("/optouts", status_code=201, response_model=OptOutOut, tags=["moderation"],
             responses={409: {"model": ErrorResponse, "description": "An entry with this name exists"}})
async def create_optout(body: OptOutCreate, caller: AdminCaller, ctx: ContextDep) -> OptOutOut:
    """Register an artist who opted out. From now on a prompt naming the artist (by name or
    alias, in any of the usual spellings: `greg rutkowski`, `by Greg_Rutkowski`,
    `(gregrutkowski:1.2)`…) is refused with `artist_opted_out`. Every API replica applies the
    change within a few seconds; this one at once."""
    async with ctx.db.unit_of_work() as session:
        row = await service.create_optout(session, caller, name=body.name, aliases=body.aliases,
                                          require_context=body.require_context)
    await ctx.moderation.refresh()
    return OptOutOut.model_validate(row)


@router.post(
    "/optouts/import",
    response_model=OptOutImportResult,
    tags=["moderation"],
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {
        "type": "string",
        "example": "name,aliases,require_context\nJane Example,janeexample;j. example,false\nMoon,,true\n",
    }}}}},
)
async def import_optouts(
    request: Request, caller: AdminCaller, ctx: ContextDep,
    content_type: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OptOutImportResult:
    """Import opt-outs from CSV (`Content-Type: text/csv`, UTF-8): one artist per row as
    `name,aliases[,require_context]`, aliases separated by `;`, an optional header row.
    New names are added; a name already registered gains the aliases it lacked. All or
    nothing: a file with any bad row is refused (400 `invalid_csv`, naming the lines)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _CSV_TYPES:
        raise InvalidRequest("Send the CSV with Content-Type: text/csv.", code="invalid_content_type")
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("The CSV is not valid UTF-8.", code="invalid_csv") from None
    async with ctx.db.unit_of_work() as session:
        result = await service.import_optouts(session, caller, text)
    await ctx.moderation.refresh()
    return OptOutImportResult(created=result.created, updated=result.updated, unchanged=result.unchanged,
                              revision=result.revision)


@router.delete("/optouts/{optout_id}", response_model=OptOutOut, responses=_404, tags=["moderation"])
async def delete_optout(optout_id: Annotated[int, Path(ge=1, le=2**31 - 1)], caller: AdminCaller,
                        ctx: ContextDep) -> OptOutOut:
    """Remove an opt-out: the artist's name is accepted again (every replica within a few
    seconds). The entry stays listed with `include_deleted=true`."""
    async with ctx.db.unit_of_work() as session:
        row = await service.delete_optout(session, caller, optout_id)
    await ctx.moderation.refresh()
    return OptOutOut.model_validate(row)


# -- incidents, reviews, audit (moderator) ---------------------------------------------------------


@router.get("/moderation/incidents", response_model=IncidentList, tags=["moderation"])
async def list_incidents(
    _: ModeratorCaller, session: SessionDep, page: PageDep,
    category: Annotated[IncidentCategory | None, Query(description="Only this category")] = None,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
    api_key_id: Annotated[str | None, Query(max_length=40)] = None,
    since: Annotated[datetime | None, Query(description="Only incidents at or after this time (ISO 8601)")] = None,
) -> IncidentList:
    """Refused generation requests, newest first: who asked, the prompts, the rule that
    refused them and the terms that matched. `strike` incidents (CSAM category) count towards
    the account's automatic suspension."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without an offset is read as UTC
    rows = await service.list_incidents(session, category=category, account_id=account_id, api_key_id=api_key_id,
                                        since=since, limit=page.limit, offset=page.offset)
    return IncidentList(data=[IncidentOut.model_validate(r) for r in rows], limit=page.limit, offset=page.offset)


def _review_out(review: ModerationReview, base: str) -> ReviewOut:
    return ReviewOut.model_validate({
        "id": review.id, "image_id": review.image_id, "job_id": review.job_id, "account_id": review.account_id,
        "api_key_id": review.api_key_id, "model": review.model, "score": review.score,
        "threshold": review.threshold, "status": review.status, "decided_by": review.decided_by,
        "decided_at": review.decided_at, "note": review.note, "created_at": review.created_at,
        "image_url": f"{base.rstrip('/')}/admin/moderation/reviews/{review.id}/image",
    })


@router.get("/moderation/reviews", response_model=ReviewList, tags=["moderation"])
async def list_reviews(
    _: ModeratorCaller, session: SessionDep, page: PageDep, request: Request,
    status: Annotated[ReviewStatus | Literal["all"], Query(description="pending (default), approved, rejected, "
                                                                       "withdrawn or all")] = "pending",
    account_id: Annotated[str | None, Query(max_length=40)] = None,
) -> ReviewList:
    """Images the output classifier withheld, oldest first (the queue is worked from its head).
    Each links to the image for moderators; decide with `approve` or `reject`."""
    rows = await service.list_reviews(session, status=None if status == "all" else status, account_id=account_id,
                                      limit=page.limit, offset=page.offset)
    base = base_url(request)
    return ReviewList(data=[_review_out(r, base) for r in rows], limit=page.limit, offset=page.offset)


@router.get(
    "/moderation/reviews/{review_id}/image",
    response_class=Response,
    tags=["moderation"],
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The withheld image"},
               404: {"model": ErrorResponse}},
)
async def review_image(review_id: str, caller: ModeratorCaller, session: SessionDep, ctx: ContextDep) -> Response:
    """The image behind a review (moderators only; every view is written to the audit log)."""
    output = await service.review_image(session, caller, review_id)
    if not await asyncio.to_thread(ctx.store.exists, output.storage_key):
        raise NotFound(f"The image of review '{review_id}' is no longer stored.", code="image_removed", param="id")
    data = await asyncio.to_thread(ctx.store.get, output.storage_key)
    return Response(data, media_type=MEDIA_TYPES[output.format], headers={"Cache-Control": "no-store"})


@router.post("/moderation/reviews/{review_id}/approve", response_model=ReviewOut, responses=_DECIDE,
             tags=["moderation"])
async def approve_review(review_id: str, caller: ModeratorCaller, ctx: ContextDep, request: Request,
                         body: ReviewDecision | None = None) -> ReviewOut:
    """Release a withheld image: its owner can fetch it from now on (it appears with status
    `delivered`). An image withheld from a `safe` account stays uncharged."""
    async with ctx.db.unit_of_work() as session:
        review = await service.approve_review(session, caller, review_id, body.note if body else None)
    return _review_out(review, base_url(request))


@router.post("/moderation/reviews/{review_id}/reject", response_model=ReviewOut, responses=_DECIDE,
             tags=["moderation"])
async def reject_review(review_id: str, caller: ModeratorCaller, ctx: ContextDep, request: Request,
                        body: ReviewDecision | None = None) -> ReviewOut:
    """Reject a withheld image: its bytes are deleted and it is listed with status `removed`."""
    async with ctx.db.unit_of_work() as session:
        review, storage_key = await service.reject_review(session, caller, review_id, body.note if body else None)
    if storage_key is not None:
        # After the commit: a failed decision must not lose the image.
        await asyncio.to_thread(ctx.store.delete, storage_key)
    return _review_out(review, base_url(request))


@router.get("/moderation/audit", response_model=AuditList, tags=["moderation"])
async def list_audit(
    _: ModeratorCaller, session: SessionDep, page: PageDep,
    action: Annotated[str | None, Query(max_length=40, description="e.g. review.approve")] = None,
    target_type: Annotated[str | None, Query(max_length=20, description="review or optout")] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditList:
    """The moderation audit log, newest first: every review decision, look at a withheld image
    and opt-out registry change, with who made it and when."""
    rows = await service.list_audit(session, action=action, target_type=target_type, target_id=target_id,
                                    limit=page.limit, offset=page.offset)
    return AuditList(data=[AuditEntryOut.model_validate(r) for r in rows], limit=page.limit, offset=page.offset)
