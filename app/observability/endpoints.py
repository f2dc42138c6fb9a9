"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, SecretStr
from sqlalchemy import text

from app.billing.metrics import BILLING
from app.context import AppContext, ContextDep
from app.errors import (
    AuthenticationError,
    ErrorBody,
    ErrorResponse,
    ServiceUnavailable,
    database_unavailable,
    is_database_unavailable,
)
from app.kit.clock import utcnow
from app.licensing.metrics import LICENSES
from app.observability.backlog import WEBHOOK_BACKLOG
from app.observability.exporter import metrics_token_matches
from app.observability.metrics import DATABASE_UP, DatabaseUp
from app.queue import repository as queue

log = logging.getLogger("ponyserve.ops")

router = APIRouter(tags=["operations"])

# A probe must answer within its own timeout even when the database host swallows packets:
# past this the database counts as down.
READINESS_DB_TIMEOUT_SECONDS = 2.0
# With the database up, the usual wait is for a worker to finish loading its models.
NO_WORKER_RETRY_AFTER_SECONDS = 5


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool
    workers: dict[str, int]
    error: ErrorBody | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no dependencies checked)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness,
            responses={400: {"model": ErrorResponse}, 503: {"model": Readiness}})
async def readyz(
    ctx: ContextDep,
    workers_wanted: Annotated[Literal["required", "optional"], Query(
        alias="workers",
        description="`optional`: ready as soon as the database answers, whether or not a worker heartbeats. "
                    "What a load balancer's probe wants: API replicas can serve status reads, listings and "
                    "admin calls without workers, and GPU workers may be scaled to zero.")] = "required",
) -> JSONResponse:
    """Ready when the database answers and some worker has heartbeated recently (with `workers=optional`,
    when the database answers).

    Otherwise 503 with `Retry-After` and, besides the readiness fields, the usual `error` object."""
    workers: dict[str, int] | None = None
    try:
        async with asyncio.timeout(READINESS_DB_TIMEOUT_SECONDS):
            workers = await _workers_seen(ctx)
        DATABASE_UP.set(True)
    except Exception as exc:
        # Never a 500: a probe only needs "not ready". An outage is expected noise at probe rate;
        # anything else is a bug worth its traceback.
        if isinstance(exc, TimeoutError) or is_database_unavailable(exc):
            DATABASE_UP.set(False)
        else:
            log.exception("readiness check failed")
    if workers is None:
        return _not_ready(database=False, workers={}, err=database_unavailable())
    if workers_wanted == "required" and not any(state in ("ready", "busy") for state in workers):
        err = ServiceUnavailable("No worker has reported recently.", code="no_worker",
                                 headers={"Retry-After": str(NO_WORKER_RETRY_AFTER_SECONDS)})
        return _not_ready(database=True, workers=workers, err=err)
    return JSONResponse(Readiness(status="ready", database=True, workers=workers).model_dump(exclude={"error"}))


async def _workers_seen(ctx: AppContext) -> dict[str, int]:
    """Worker counts by state among recent heartbeats; raises when the database does not answer."""
    workers: dict[str, int] = {}
    async with ctx.db.unit_of_work() as session:
        await session.execute(text("SELECT 1"))
        since = utcnow() - timedelta(seconds=ctx.settings.worker_stale_seconds)
        for w in await queue.workers_seen_since(session, since):
            workers[w.state] = workers.get(w.state, 0) + 1
    return workers


def _not_ready(*, database: bool, workers: dict[str, int], err: ServiceUnavailable) -> JSONResponse:
    # The error object exactly as every other route renders it (``param`` included, even when null).
    body = {**Readiness(status="not_ready", database=database, workers=workers).model_dump(exclude={"error"}),
            **err.body()}
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"model": ErrorResponse}})
async def metrics(ctx: ContextDep, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus exposition: request latency, jobs, queue depth, workers.

    With PONYSERVE_METRICS_TOKEN set, wants `Authorization: Bearer <token>`. Cheap to scrape: the
    database-backed gauges are refreshed in the background (see `refresh_metrics_loop`)."""
    _check_metrics_token(ctx.settings.metrics_token, authorization)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _check_metrics_token(token: SecretStr | None, authorization: str | None) -> None:
    if not metrics_token_matches(token, authorization):
        raise AuthenticationError("Send 'Authorization: Bearer <metrics token>'.", code="invalid_metrics_token")


async def refresh_metrics(ctx: AppContext) -> None:
    """Re-reads every database-backed gauge in one short transaction."""
    now = utcnow()
    async with ctx.db.unit_of_work() as session:
        await ctx.fleet.refresh(session, ctx.settings.worker_stale_seconds, now)
        await LICENSES.refresh(session, now)
        await BILLING.refresh(session, now)
        await WEBHOOK_BACKLOG.refresh(session, now)


async def refresh_metrics_loop(ctx: AppContext, interval: float, up: DatabaseUp = DATABASE_UP) -> None:
    """Keeps the gauges fresh until cancelled; a failed round keeps the last values. ``up`` says
    whether the last round reached the database."""
    while True:
        try:
            await refresh_metrics(ctx)
            up.set(True)
        except Exception as exc:
            if is_database_unavailable(exc):
                up.set(False)
                log.warning("metrics refresh skipped: database unavailable")
            else:
                log.exception("metrics refresh failed")
        await asyncio.sleep(interval)
