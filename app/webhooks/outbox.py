"""The webhook outbox: messages about a job, written in the transaction that changes the job.

A message exists only if the job's account has an enabled endpoint that wants its type, so jobs
of accounts without webhooks cost one indexed query per transition and nothing more. Its body is
rendered there and then, by the same presenter as ``GET /v1/generations/{id}``, so a
``generation.started`` message shows the job running even if it is sent after the job finished,
and every retry of a message carries the same body. Messages of one job are numbered (``job_seq``)
under the job row's lock, which every transition holds, so their order is the order of the
transitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import Database
from app.kit.ids import new_id
from app.queue.models import Job
from app.webhooks import deliveries
from app.webhooks.models import EndpointStatus, WebhookDelivery, WebhookEndpoint, WebhookMessage


class EventType(StrEnum):
    STARTED = "generation.started"
    SUCCEEDED = "generation.succeeded"
    FAILED = "generation.failed"
    CANCELLED = "generation.cancelled"


class JobPresenter(Protocol):
    """What renders a job as ``GET /v1/generations/{id}`` shows it (``app.generation.presentation.Presenter``;
    named by shape so the outbox, which settlement uses, does not depend on the API layer)."""

    async def job(self, session: AsyncSession, job: Job, base_url: str) -> BaseModel: ...


@dataclass(frozen=True)
class JobRenderer:
    """Renders a job's body for messages: the API's presenter, with the public base of its links."""

    presenter: JobPresenter
    base_url: str


_RENDERERS: dict[AsyncEngine, JobRenderer] = {}


def attach(db: Database, renderer: JobRenderer) -> None:
    """Every message written through ``db`` in this process is rendered by ``renderer``."""
    _RENDERERS[db.engine] = renderer


def detach(db: Database) -> None:
    _RENDERERS.pop(db.engine, None)


def is_attached(db: Database) -> bool:
    return db.engine in _RENDERERS


def _renderer(session: AsyncSession) -> JobRenderer:
    renderer = _RENDERERS.get(session.bind) if isinstance(session.bind, AsyncEngine) else None
    if renderer is None:
        # A process that changes jobs of accounts with webhooks must be able to say what changed;
        # create_app() and the worker attach one at start-up.
        raise RuntimeError("no webhook renderer attached to this database")
    return renderer


async def record_job_event(session: AsyncSession, job_id: str, event: EventType,
                           now: datetime) -> WebhookMessage | None:
    """Writes the message for ``event`` and one pending delivery per endpoint that wants it; None if none does."""
    endpoints = list((await session.execute(
        select(WebhookEndpoint).join(Job, Job.account_id == WebhookEndpoint.account_id)
        .where(Job.id == job_id, WebhookEndpoint.status == EndpointStatus.ENABLED)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )).scalars().all())
    endpoints = [e for e in endpoints if e.events is None or event.value in e.events]
    if not endpoints:
        return None
    job = await session.get(Job, job_id, populate_existing=True)
    # store=false jobs answer their caller synchronously and keep nothing, messages included.
    if job is None or job.deleted_at is not None or not job.store:
        return None
    renderer = _renderer(session)
    data = (await renderer.presenter.job(session, job, renderer.base_url)).model_dump(mode="json")
    body = json.dumps({"type": event.value, "timestamp": _timestamp(now), "data": data}, separators=(",", ":"),
                      ensure_ascii=False)
    seq = (await session.execute(
        select(func.coalesce(func.max(WebhookMessage.job_seq), 0)).where(WebhookMessage.job_id == job_id)
    )).scalar_one() + 1
    message = WebhookMessage(id=new_id("msg"), account_id=job.account_id, job_id=job_id, job_seq=seq,
                             type=event.value, body=body, created_at=now)
    session.add(message)
    # The message row first: no relationship tells the unit of work that deliveries point at it.
    await session.flush()
    session.add_all([WebhookDelivery(id=new_id("whd"), message_id=message.id, endpoint_id=endpoint.id, job_id=job_id,
                                     job_seq=seq, status="pending", attempts=0, next_attempt_at=now, created_at=now)
                     for endpoint in endpoints])
    await session.flush()
    return message


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def forget_job(session: AsyncSession, job_id: str) -> None:
    """Drops every message about the job and their deliveries, sent or not: their bodies carry the
    job's prompts, which a deletion (or retention) removes everywhere."""
    await deliveries.delete_where(session, WebhookDelivery.job_id == job_id)
    await session.execute(delete(WebhookMessage).where(WebhookMessage.job_id == job_id))
