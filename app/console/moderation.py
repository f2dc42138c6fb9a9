"""Moderation: the review queue with its images, incidents, the artist opt-out registry, the audit log."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile
from starlette.responses import Response

from app.console.common import PAGE_SIZE, Done, Offset, blank_to_none, change, context
from app.console.forms import FormProblem, text
from app.console.render import page_of, render
from app.console.routing import console_router, redirect
from app.console.session import CheckedForm, ModerationOperator
from app.errors import InvalidRequest, NotFound
from app.moderation import service as moderation
from app.runtime.encoding import MEDIA_TYPES

router = console_router()

ReviewId = Annotated[str, Path(max_length=40)]
Filter = Annotated[str | None, Query(max_length=64)]
CATEGORIES = ("csam", "artist_optout", "blocklist", "rating_violation")
# The largest opt-out CSV the form takes (as POST /admin/optouts/import).
MAX_IMPORT_BYTES = 8 * 1024 * 1024
OPTOUTS = "/console/moderation/optouts"


@router.get("/moderation")
async def moderation_home(request: Request, _: ModerationOperator) -> Response:
    return redirect(request, "/console/moderation/reviews")


@router.get("/moderation/reviews")
async def reviews_page(request: Request, operator: ModerationOperator, offset: Offset = 0,
                       status: Annotated[Literal["pending", "approved", "rejected", "withdrawn", "all"], Query()]
                       = "pending", account: Filter = None) -> Response:
    async with context(request).db.unit_of_work() as session:
        rows = list(await moderation.list_reviews(session, status=None if status == "all" else status,
                                                  account_id=blank_to_none(account), limit=PAGE_SIZE + 1,
                                                  offset=offset))
    shown, pager = page_of(rows, path="/console/moderation/reviews", params={"status": status, "account": account},
                           offset=offset, limit=PAGE_SIZE)
    return render(request, "reviews.html", {"reviews": shown, "pager": pager, "status": status,
                                            "account": account or "", "tab": "reviews"},
                  operator=operator, session=operator.session, section="moderation")


@router.get("/moderation/reviews/{review_id}/image")
async def review_image(request: Request, review_id: ReviewId, operator: ModerationOperator) -> Response:
    """The withheld image, for the moderator looking at it; every look is audited, as over the API."""
    ctx = context(request)
    async with ctx.db.unit_of_work() as session:
        output = await moderation.review_image(session, operator.principal, review_id)
    if not await asyncio.to_thread(ctx.store.exists, output.storage_key):
        raise NotFound("The image is no longer stored.", code="image_removed")
    data = await asyncio.to_thread(ctx.store.get, output.storage_key)
    return Response(data, media_type=MEDIA_TYPES[output.format], headers={"Cache-Control": "no-store"})


async def _decide(request: Request, operator: ModerationOperator, review_id: str, form: CheckedForm,
                  decision: Literal["approve", "reject"]) -> Response:
    ctx = context(request)
    note = text(form, "note")[:2000] or None
    back = "/console/moderation/reviews"
    removed: list[str] = []

    async def work(session: AsyncSession) -> Done:
        if decision == "approve":
            await moderation.approve_review(session, operator.principal, review_id, note)
            return Done("Image approved: its owner can fetch it now.")
        _, storage_key = await moderation.reject_review(session, operator.principal, review_id, note)
        if storage_key is not None:
            removed.append(storage_key)
        return Done("Image rejected and deleted.")

    async def delete_bytes() -> None:
        # After the commit, as the API does: a failed decision must not lose the image.
        for key in removed:
            await asyncio.to_thread(ctx.store.delete, key)

    return await change(request, operator, back, work, after_commit=delete_bytes)


@router.post("/moderation/reviews/{review_id}/approve")
async def approve(request: Request, review_id: ReviewId, operator: ModerationOperator, form: CheckedForm
                  ) -> Response:
    return await _decide(request, operator, review_id, form, "approve")


@router.post("/moderation/reviews/{review_id}/reject")
async def reject(request: Request, review_id: ReviewId, operator: ModerationOperator, form: CheckedForm
                 ) -> Response:
    return await _decide(request, operator, review_id, form, "reject")


@router.get("/moderation/incidents")
async def incidents_page(request: Request, operator: ModerationOperator, offset: Offset = 0,
                         category: Annotated[Literal["csam", "artist_optout", "blocklist", "rating_violation", ""]
                                             | None, Query()] = None,
                         account: Filter = None, key: Filter = None,
                         since: Annotated[date | None, Query()] = None) -> Response:
    since_at = datetime.combine(since, datetime.min.time(), UTC) if since else None
    async with context(request).db.unit_of_work() as session:
        rows = list(await moderation.list_incidents(session, category=category or None,
                                                    account_id=blank_to_none(account),
                                                    api_key_id=blank_to_none(key), since=since_at,
                                                    limit=PAGE_SIZE + 1, offset=offset))
    params = {"category": category, "account": account, "key": key, "since": since.isoformat() if since else None}
    shown, pager = page_of(rows, path="/console/moderation/incidents", params=params, offset=offset,
                           limit=PAGE_SIZE)
    return render(request, "incidents.html", {"incidents": shown, "pager": pager, "categories": CATEGORIES,
                                              "category": category or "", "account": account or "",
                                              "key": key or "", "since": since, "tab": "incidents"},
                  operator=operator, session=operator.session, section="moderation")


@router.get("/moderation/optouts")
async def optouts_page(request: Request, operator: ModerationOperator, offset: Offset = 0,
                       deleted: Annotated[bool, Query()] = False) -> Response:
    async with context(request).db.unit_of_work() as session:
        rows, revision = await moderation.list_optouts(session, include_deleted=deleted, limit=PAGE_SIZE + 1,
                                                       offset=offset)
    shown, pager = page_of(list(rows), path="/console/moderation/optouts",
                           params={"deleted": "true" if deleted else None}, offset=offset, limit=PAGE_SIZE)
    return render(request, "optouts.html", {"optouts": shown, "pager": pager, "revision": revision,
                                            "deleted": deleted, "tab": "optouts"},
                  operator=operator, session=operator.session, section="moderation")


def _aliases(raw: str) -> list[str]:
    return [a.strip() for a in raw.replace("\n", ";").replace(",", ";").split(";") if a.strip()]


async def _refresh_policy(request: Request) -> None:
    # Like the API: this process at once, the other replicas on their next registry poll.
    await context(request).moderation.refresh()


@router.post("/moderation/optouts")
async def create_optout(request: Request, operator: ModerationOperator, form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        name = text(form, "name")
        if not name or len(name) > 200:
            raise FormProblem("Give the artist's name (up to 200 characters).", param="name")
        row = await moderation.create_optout(session, operator.principal, name=name,
                                             aliases=_aliases(text(form, "aliases")),
                                             require_context="require_context" in form)
        return Done(f"Opt-out for “{row.name}” added: prompts naming the artist are refused from now on.")

    return await change(request, operator, OPTOUTS, work, after_commit=lambda: _refresh_policy(request))


@router.post("/moderation/optouts/import")
async def import_optouts(request: Request, operator: ModerationOperator, form: CheckedForm) -> Response:
    upload = form.get("file")

    async def work(session: AsyncSession) -> Done:
        if not isinstance(upload, UploadFile):
            raise FormProblem("Choose a CSV file to import.", param="file")
        raw = await upload.read(MAX_IMPORT_BYTES + 1)
        if len(raw) > MAX_IMPORT_BYTES:
            raise FormProblem("The CSV is larger than 8 MiB.", param="file")
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidRequest("The CSV is not valid UTF-8.", code="invalid_csv") from None
        result = await moderation.import_optouts(session, operator.principal, content)
        return Done(f"Imported: {result.created} new, {result.updated} updated, {result.unchanged} unchanged.")

    return await change(request, operator, OPTOUTS, work, after_commit=lambda: _refresh_policy(request))


@router.post("/moderation/optouts/{optout_id}/delete")
async def delete_optout(request: Request, optout_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                        operator: ModerationOperator, form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        row = await moderation.delete_optout(session, operator.principal, optout_id)
        return Done(f"Opt-out for “{row.name}” deleted: the name is accepted again.")

    return await change(request, operator, OPTOUTS, work, after_commit=lambda: _refresh_policy(request))


@router.get("/moderation/audit")
async def audit_page(request: Request, operator: ModerationOperator, offset: Offset = 0,
                     action: Annotated[str | None, Query(max_length=40)] = None,
                     target_type: Annotated[str | None, Query(max_length=20)] = None,
                     target_id: Filter = None) -> Response:
    async with context(request).db.unit_of_work() as session:
        rows = list(await moderation.list_audit(session, action=blank_to_none(action),
                                                target_type=blank_to_none(target_type),
                                                target_id=blank_to_none(target_id), limit=PAGE_SIZE + 1,
                                                offset=offset))
    params = {"action": action, "target_type": target_type, "target_id": target_id}
    shown, pager = page_of(rows, path="/console/moderation/audit", params=params, offset=offset, limit=PAGE_SIZE)
    return render(request, "audit.html", {"entries": shown, "pager": pager, "action": action or "",
                                          "target_type": target_type or "", "target_id": target_id or "",
                                          "tab": "audit"},
                  operator=operator, session=operator.session, section="moderation")
