"""Partner webhook endpoints: register, list, remove, rotate secrets, read the delivery log, resend."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidRequest, NotFound
from app.kit.ids import new_id
from app.webhooks import deliveries
from app.webhooks.models import EndpointStatus, WebhookDelivery, WebhookEndpoint
from app.webhooks.schemas import AttemptOut, DeliveryList, DeliveryOut, WebhookCreate, WebhookOut, WebhookWithSecret
from app.webhooks.signing import new_secret
from app.webhooks.targets import TargetRefused, resolve

# Endpoints one account may register: enough for staging + production + a few tools.
MAX_ENDPOINTS_PER_ACCOUNT = 10


def view(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(id=endpoint.id, url=endpoint.url, events=endpoint.events,
                      status=endpoint.status, disabled_reason=endpoint.disabled_reason,
                      created_at=endpoint.created_at, previous_secret_expires_at=endpoint.previous_secret_expires_at)


def with_secret(endpoint: WebhookEndpoint) -> WebhookWithSecret:
    return WebhookWithSecret(**view(endpoint).model_dump(), secret=endpoint.secret)


async def register(session: AsyncSession, account_id: str, body: WebhookCreate, *, allow_private: bool,
                   now: datetime) -> WebhookEndpoint:
    try:
        await resolve(body.url, allow_private=allow_private)
    except TargetRefused as exc:
        raise InvalidRequest(str(exc), code="invalid_webhook_url", param="url") from None
    if body.events is not None and len(set(body.events)) != len(body.events):
        raise InvalidRequest("events lists an event more than once.", code="invalid_webhook_events", param="events")
    count = (await session.execute(
        select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.account_id == account_id)
    )).scalar_one()
    if count >= MAX_ENDPOINTS_PER_ACCOUNT:
        raise Conflict(f"An account may register at most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints; delete one "
                       "first.", code="too_many_webhooks")
    endpoint = WebhookEndpoint(id=new_id("we"), account_id=account_id, url=body.url,
                               events=list(body.events) if body.events is not None else None,
                               status=EndpointStatus.ENABLED, secret=new_secret(), created_at=now)
    session.add(endpoint)
    await session.flush()
    return endpoint


async def list_for(session: AsyncSession, account_id: str) -> list[WebhookEndpoint]:
    return list((await session.execute(
        select(WebhookEndpoint).where(WebhookEndpoint.account_id == account_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )).scalars().all())


async def owned(session: AsyncSession, account_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    # Another account's endpoint is absent, not forbidden: ids must not leak existence.
    if endpoint is None or endpoint.account_id != account_id:
        raise NotFound(f"No webhook endpoint '{endpoint_id}'.", param="id")
    return endpoint


async def remove(session: AsyncSession, account_id: str, endpoint_id: str) -> None:
    """Deletes the endpoint and its delivery log; nothing more is sent to it, pending deliveries included."""
    endpoint = await owned(session, account_id, endpoint_id)
    await deliveries.delete_where(session, WebhookDelivery.endpoint_id == endpoint.id)
    await session.delete(endpoint)


async def rotate(session: AsyncSession, account_id: str, endpoint_id: str, *, overlap_seconds: float,
                 now: datetime) -> WebhookEndpoint:
    """A new secret signs from now on; the current one goes on signing beside it for ``overlap_seconds``,
    so a receiver can switch to the new one without missing a delivery."""
    endpoint = await owned(session, account_id, endpoint_id)
    endpoint.previous_secret, endpoint.secret = endpoint.secret, new_secret()
    endpoint.previous_secret_expires_at = now + timedelta(seconds=overlap_seconds)
    await session.flush()
    return endpoint


async def delivery_log(session: AsyncSession, account_id: str, endpoint_id: str, *, limit: int,
                       after: str | None) -> DeliveryList:
    endpoint = await owned(session, account_id, endpoint_id)
    before = None
    if after is not None:
        cursor = await session.get(WebhookDelivery, after)
        if cursor is None or cursor.endpoint_id != endpoint.id:
            raise InvalidRequest(f"No delivery '{after}' of this endpoint to page after.", code="invalid_cursor",
                                 param="after")
        before = (cursor.created_at, cursor.id)
    rows = await deliveries.for_endpoint(session, endpoint.id, limit=limit + 1, before=before)
    page = rows[:limit]
    attempts = await deliveries.attempts_of(session, [d.id for d, _ in page])
    data = [
        DeliveryOut(id=d.id, webhook_id=d.message_id, event=event, generation_id=d.job_id,
                    status=d.status, attempts=d.attempts,
                    next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                    last_status_code=d.last_status_code, last_error=d.last_error, delivered_at=d.delivered_at,
                    created_at=d.created_at,
                    attempt_log=[AttemptOut(attempted_at=a.attempted_at, status_code=a.status_code, error=a.error,
                                            duration_ms=a.duration_ms) for a in attempts.get(d.id, [])])
        for d, event in page
    ]
    return DeliveryList(data=data, has_more=len(rows) > limit, last_id=data[-1].id if data else None)


async def resend(session: AsyncSession, account_id: str, endpoint_id: str, delivery_id: str, now: datetime) -> None:
    """Sends a delivery again (the same message and webhook-id), after it succeeded or gave up."""
    endpoint = await owned(session, account_id, endpoint_id)
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint.id:
        raise NotFound(f"No delivery '{delivery_id}' of this endpoint.", param="delivery_id")
    if endpoint.status != EndpointStatus.ENABLED:
        raise Conflict("The endpoint is disabled (its receiver answered 410 Gone); register it again to resume.",
                       code="webhook_disabled")
    if not await deliveries.resend(session, delivery_id, now):
        raise Conflict("The delivery is still pending: it will be attempted on its schedule.",
                       code="delivery_pending")
