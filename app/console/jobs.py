"""Jobs: find one by id, account or status, follow its lifecycle, cancel it; the workers draining the queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.admin import service as admin
from app.console.common import PAGE_SIZE, Done, Offset, blank_to_none, change, context
from app.console.render import page_of, render
from app.console.routing import console_router, redirect
from app.console.session import AdminOperator, CheckedForm
from app.kit.clock import utcnow
from app.queue import repository as queue

router = console_router()

JobId = Annotated[str, Path(max_length=40)]
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@router.get("/jobs")
async def jobs_page(request: Request, operator: AdminOperator, offset: Offset = 0,
                    job_id: Annotated[str | None, Query(alias="id", max_length=40)] = None,
                    account: Annotated[str | None, Query(max_length=40)] = None,
                    status: Annotated[Literal["queued", "running", "succeeded", "failed", "cancelled", ""] | None,
                                      Query()] = None) -> Response:
    ctx = context(request)
    wanted = blank_to_none(job_id)
    if wanted is not None:
        return redirect(request, f"/console/jobs/{wanted}")
    now = utcnow()
    async with ctx.db.unit_of_work() as session:
        rows = list(await admin.search_jobs(session, account_id=blank_to_none(account), status=status or None,
                                            limit=PAGE_SIZE + 1, offset=offset))
        workers = await queue.workers_seen_since(session, now - timedelta(seconds=ctx.settings.worker_stale_seconds))
    shown, pager = page_of(rows, path="/console/jobs", params={"account": account, "status": status},
                           offset=offset, limit=PAGE_SIZE)
    return render(request, "jobs.html", {"jobs": shown, "pager": pager, "workers": workers, "statuses": STATUSES,
                                         "account": account or "", "status": status or "", "now": now},
                  operator=operator, session=operator.session, section="jobs")


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: JobId, operator: AdminOperator) -> Response:
    async with context(request).db.unit_of_work() as session:
        detail = await admin.job_detail(session, job_id)
    return render(request, "job.html", {"d": detail, "job": detail.job}, operator=operator,
                  session=operator.session, section="jobs")


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: JobId, operator: AdminOperator, _form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        await admin.cancel_job(session, operator.principal, job_id)
        return Done("Job cancelled; its reservation is released and nothing is charged.")

    async def wake() -> None:
        # Waiters in this process now; the other replicas hear settlement's NOTIFY.
        context(request).events.job_changed(job_id)

    return await change(request, operator, f"/console/jobs/{job_id}", work, after_commit=wake)
