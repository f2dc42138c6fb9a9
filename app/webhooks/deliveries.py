"""A delivery's lifecycle and its SQL: pending → succeeded | failed, retried on the way, resent by hand.

```
 pending ──2xx──▶ succeeded
    │ ▲
    │ └── failed attempt, attempts left (next_attempt_at from the schedule or Retry-After)
    └──── schedule used up, target refused, 410 Gone ──▶ failed
 succeeded | failed ──resend──▶ pending
```

Each transition is one conditional UPDATE on the delivery row, guarded by the state it leaves, so a
dispatcher whose lease ran out (another one took the delivery) records nothing twice.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.kit.ids import new_id
from app.webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)

# Candidates read per dispatcher round; only one per endpoint is taken.
_CANDIDATES = 200
# A Retry-After is honoured up to the longest step of the schedule.
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0
# Jitter of ±10 % around each scheduled delay, so retries of many messages do not arrive together.
JITTER = 0.1


@dataclass(frozen=True)
class Claimed:
    """A delivery a dispatcher holds, with what sending it needs."""

    delivery_id: str
    message_id: str
    body: str
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]


def next_delay(attempts: int, schedule: Sequence[float], retry_after: float | None,
               rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones; None when the schedule is used up.

    A receiver's Retry-After replaces the scheduled delay (capped at 24 h): it knows when it will be back.
    """
    if attempts > len(schedule):
        return None
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
    delay = schedule[attempts - 1]
    return delay * (1 + (rng or random).uniform(-JITTER, JITTER))


async def due(session: AsyncSession, now: datetime, *, busy_endpoints: set[str], limit: int) -> list[str]:
    """Ids of deliveries to attempt now: pending, due, not leased, their endpoint enabled and not busy
    here, and no earlier message of the same job still pending for that endpoint; one per endpoint."""
    earlier = aliased(WebhookDelivery)
    rows = (await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.endpoint_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now,
               or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
               WebhookEndpoint.status == EndpointStatus.ENABLED,
               ~exists().where(earlier.endpoint_id == WebhookDelivery.endpoint_id,
                               earlier.job_id == WebhookDelivery.job_id, earlier.job_seq < WebhookDelivery.job_seq,
                               earlier.status == DeliveryStatus.PENDING))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(_CANDIDATES)
    )).all()
    chosen: list[str] = []
    taken = set(busy_endpoints)
    for delivery_id, endpoint_id in rows:
        if endpoint_id not in taken:
            taken.add(endpoint_id)
            chosen.append(delivery_id)
            if len(chosen) >= limit:
                break
    return chosen


async def lease(session: AsyncSession, delivery_id: str, now: datetime, until: datetime) -> Claimed | None:
    """Takes the delivery for one attempt (None if another dispatcher took it, or it is no longer due)."""
    taken = (await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING,
               or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
        .values(lease_until=until).returning(WebhookDelivery.message_id, WebhookDelivery.endpoint_id)
        .execution_options(synchronize_session=False)
    )).first()
    if taken is None:
        return None
    message_id, endpoint_id = taken
    body = (await session.execute(select(WebhookMessage.body).where(WebhookMessage.id == message_id))).scalar_one()
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    assert endpoint is not None
    return Claimed(delivery_id=delivery_id, message_id=message_id, body=body, endpoint_id=endpoint_id,
                   url=endpoint.url, secrets=signing_secrets(endpoint, now))


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    """The secrets that sign now: the current one, and the previous one until its overlap ends."""
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        return endpoint.secret, endpoint.previous_secret
    return (endpoint.secret,)


def _log(session: AsyncSession, delivery_id: str, now: datetime, status_code: int | None, error: str | None,
         duration_ms: int) -> None:
    session.add(WebhookAttempt(id=new_id("wha"), delivery_id=delivery_id, attempted_at=now, status_code=status_code,
                               error=error[:500] if error else None, duration_ms=duration_ms))


async def _move(session: AsyncSession, delivery_id: str, values: dict[str, Any]) -> bool:
    moved = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING)
        .values(lease_until=None, **values).returning(WebhookDelivery.id).execution_options(synchronize_session=False)
    )
    return moved.first() is not None


async def succeeded(session: AsyncSession, delivery_id: str, now: datetime, status_code: int, duration_ms: int) -> bool:
    """pending → succeeded."""
    _log(session, delivery_id, now, status_code, None, duration_ms)
    return await _move(session, delivery_id, {"status": DeliveryStatus.SUCCEEDED,
                                              "attempts": WebhookDelivery.attempts + 1, "last_attempt_at": now,
                                              "last_status_code": status_code, "last_error": None,
                                              "delivered_at": now})


async def attempt_failed(session: AsyncSession, delivery_id: str, now: datetime, *, status_code: int | None,
                         error: str, duration_ms: int, schedule: Sequence[float], retry_after: float | None) -> bool:
    """One more failed attempt: pending again at the next step of the schedule, or failed once it is used up."""
    attempts = (await session.execute(
        select(WebhookDelivery.attempts).where(WebhookDelivery.id == delivery_id)
    )).scalar_one_or_none()
    if attempts is None:
        return False
    _log(session, delivery_id, now, status_code, error, duration_ms)
    delay = next_delay(attempts + 1, schedule, retry_after)
    values: dict[str, Any] = {"attempts": attempts + 1, "last_attempt_at": now, "last_status_code": status_code,
                              "last_error": error[:500]}
    if delay is None:
        values["status"] = DeliveryStatus.FAILED
    else:
        values["next_attempt_at"] = now + timedelta(seconds=delay)
    return await _move(session, delivery_id, values)


async def given_up(session: AsyncSession, delivery_id: str, now: datetime, *, status_code: int | None, error: str,
                   duration_ms: int = 0) -> bool:
    """pending → failed at once: the target was refused, or the receiver said 410 Gone."""
    _log(session, delivery_id, now, status_code, error, duration_ms)
    return await _move(session, delivery_id, {"status": DeliveryStatus.FAILED,
                                              "attempts": WebhookDelivery.attempts + 1, "last_attempt_at": now,
                                              "last_status_code": status_code, "last_error": error[:500]})


async def disable_endpoint(session: AsyncSession, endpoint_id: str, reason: str, now: datetime) -> None:
    """The receiver answered 410 Gone: the endpoint stops receiving, and what was pending for it fails."""
    await session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                          .values(status=EndpointStatus.DISABLED, disabled_reason=reason[:300]))
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.FAILED, lease_until=None, last_error="endpoint disabled (410 Gone)")
        .execution_options(synchronize_session=False)
    )


async def resend(session: AsyncSession, delivery_id: str, now: datetime) -> bool:
    """succeeded | failed → pending, due now, with a fresh schedule (the same message: the same webhook-id)."""
    moved = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id,
               WebhookDelivery.status.in_([DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]))
        .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, lease_until=None)
        .returning(WebhookDelivery.id).execution_options(synchronize_session=False)
    )
    return moved.first() is not None


async def for_endpoint(session: AsyncSession, endpoint_id: str, *, limit: int,
                       before: tuple[datetime, str] | None) -> list[tuple[WebhookDelivery, str]]:
    """The endpoint's deliveries, newest first, with their message's type; ``before`` = (created_at, id) cursor."""
    query = (select(WebhookDelivery, WebhookMessage.type)
             .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
             .where(WebhookDelivery.endpoint_id == endpoint_id))
    if before is not None:
        created, last_id = before
        query = query.where(or_(WebhookDelivery.created_at < created,
                                and_(WebhookDelivery.created_at == created, WebhookDelivery.id < last_id)))
    rows = await session.execute(query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                                 .limit(limit))
    return [(delivery, event_type) for delivery, event_type in rows.all()]


async def attempts_of(session: AsyncSession, delivery_ids: Sequence[str]) -> dict[str, list[WebhookAttempt]]:
    if not delivery_ids:
        return {}
    rows = (await session.execute(
        select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.attempted_at, WebhookAttempt.id)
    )).scalars().all()
    by_delivery: dict[str, list[WebhookAttempt]] = {}
    for attempt in rows:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return by_delivery


async def prune(session: AsyncSession, older_than: datetime, *, limit: int = 1000) -> int:
    """Deletes up to ``limit`` finished deliveries created before ``older_than`` (with their attempts), and
    the messages left without deliveries; the number of deliveries deleted."""
    ids = list((await session.execute(
        select(WebhookDelivery.id).where(WebhookDelivery.status != DeliveryStatus.PENDING,
                                         WebhookDelivery.created_at < older_than).limit(limit)
    )).scalars().all())
    if not ids:
        return 0
    await delete_where(session, WebhookDelivery.id.in_(ids))
    await session.execute(delete(WebhookMessage).where(
        WebhookMessage.created_at < older_than,
        ~exists().where(WebhookDelivery.message_id == WebhookMessage.id)))
    return len(ids)


async def delete_where(session: AsyncSession, condition: ColumnElement[bool]) -> None:
    """Deletes the deliveries matching ``condition`` and their attempts (children first, explicitly:
    SQLite enforces no ON DELETE CASCADE unless foreign keys are switched on)."""
    doomed = select(WebhookDelivery.id).where(condition)
    await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(doomed)))
    await session.execute(delete(WebhookDelivery).where(condition))
