"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.billing.metrics import BILLING
from app.context import ContextDep
from app.kit.clock import utcnow
from app.licensing.metrics import LICENSES
from app.queue import repository as queue

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool
    workers: dict[str, int]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no dependencies checked)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(ctx: ContextDep) -> JSONResponse:
    """Ready when the database answers and some worker has heartbeated recently."""
    database, workers = False, dict[str, int]()
    try:
        async with ctx.db.unit_of_work() as session:
            await session.execute(text("SELECT 1"))
            database = True
            since = utcnow() - timedelta(seconds=ctx.settings.worker_stale_seconds)
            for w in await queue.workers_seen_since(session, since):
                workers[w.state] = workers.get(w.state, 0) + 1
    except Exception:
        database = False
    ok = database and any(state in ("ready", "busy") for state in workers)
    body = Readiness(status="ready" if ok else "not_ready", database=database, workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503,
                        headers=None if ok else {"Retry-After": "5"})


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus exposition: request latency, jobs, queue depth, workers."""
    async with ctx.db.unit_of_work() as session:
        await ctx.fleet.refresh(session, ctx.settings.worker_stale_seconds)
        await LICENSES.refresh(session, utcnow())
        await BILLING.refresh(session, utcnow())
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
