"""Partner webhook routes (scope ``generate``): endpoints of the caller's account and their delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from app.accounts.auth import GenerateCaller
from app.context import ContextDep
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, ErrorResponse
from app.kit.clock import utcnow
from app.webhooks import service
from app.webhooks.schemas import DeliveryList, WebhookCreate, WebhookList, WebhookOut, WebhookWithSecret

router = APIRouter(tags=["webhooks"], responses=COMMON_ERROR_RESPONSES)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@router.post("/v1/webhooks", status_code=201, response_model=WebhookWithSecret,
             responses={409: {"model": ErrorResponse}})
async def create_webhook(body: WebhookCreate, caller: GenerateCaller, ctx: ContextDep,
                         session: SessionDep) -> WebhookWithSecret:
    """Register an endpoint for this account's generation events (Standard Webhooks 1.0).

    Every delivery is a POST with `webhook-id` (the same on every retry of one event),
    `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`)
    headers, verifiable with the `standardwebhooks` package and the `secret` returned here (only
    here). The URL must resolve to a public address."""
    endpoint = await service.register(session, caller.account.id, body,
                                      allow_private=ctx.settings.webhook_allow_private, now=utcnow())
    return service.with_secret(endpoint)


@router.get("/v1/webhooks", response_model=WebhookList)
async def list_webhooks(caller: GenerateCaller, session: SessionDep) -> WebhookList:
    """This account's webhook endpoints (without their secrets)."""
    return WebhookList(data=[service.view(e) for e in await service.list_for(session, caller.account.id)])


@router.get("/v1/webhooks/{webhook_id}", response_model=WebhookOut, responses=_NOT_FOUND)
async def get_webhook(webhook_id: str, caller: GenerateCaller, session: SessionDep) -> WebhookOut:
    """One endpoint of this account."""
    return service.view(await service.owned(session, caller.account.id, webhook_id))


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
async def delete_webhook(webhook_id: str, caller: GenerateCaller, session: SessionDep) -> Response:
    """Remove an endpoint: nothing more is sent to it, and its delivery log goes with it."""
    await service.remove(session, caller.account.id, webhook_id)
    return Response(status_code=204)


@router.post("/v1/webhooks/{webhook_id}/rotate-secret", response_model=WebhookWithSecret, responses=_NOT_FOUND)
async def rotate_webhook_secret(webhook_id: str, caller: GenerateCaller, ctx: ContextDep,
                                session: SessionDep) -> WebhookWithSecret:
    """A new signing secret (shown once). The previous one keeps signing beside it (two `v1,` signatures in
    `webhook-signature`) until `previous_secret_expires_at`, 24 hours from now."""
    endpoint = await service.rotate(session, caller.account.id, webhook_id,
                                    overlap_seconds=ctx.settings.webhook_secret_overlap_seconds, now=utcnow())
    return service.with_secret(endpoint)


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=DeliveryList, responses=_NOT_FOUND)
async def list_webhook_deliveries(
    webhook_id: str, caller: GenerateCaller, session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Deliveries per page")] = 20,
    after: Annotated[str | None, Query(max_length=40, description="A delivery id: the page after it")] = None,
) -> DeliveryList:
    """The endpoint's delivery log, newest first: each delivery's status, attempts (status code, error,
    duration) and next attempt."""
    return await service.delivery_log(session, caller.account.id, webhook_id, limit=limit, after=after)


@router.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/resend", status_code=202, response_class=Response,
             responses={**_NOT_FOUND, 409: {"model": ErrorResponse}})
async def resend_webhook_delivery(webhook_id: str, delivery_id: str, caller: GenerateCaller,
                                  session: SessionDep) -> Response:
    """Send a delivery again, now (the same message: the same `webhook-id` and body), with a fresh retry
    schedule. 409 while it is still pending."""
    await service.resend(session, caller.account.id, webhook_id, delivery_id, utcnow())
    return Response(status_code=202)
