"""Licences: each cap this period with its projection, revenue against revenue caps, monthly reports."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Query, Request
from starlette.responses import Response

from app.console.common import context
from app.console.render import download, render
from app.console.routing import console_router
from app.console.session import AdminOperator
from app.kit.clock import utcnow
from app.licensing import service as licensing
from app.quotas.periods import month_start

router = console_router()

Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (UTC)")]


@router.get("/licenses")
async def licenses_page(request: Request, operator: AdminOperator) -> Response:
    now = utcnow()
    async with context(request).db.unit_of_work() as session:
        statuses = await licensing.statuses(session, now)
        frozen = await licensing.frozen_reports(session)
    last_month = (month_start(now) - timedelta(days=1)).strftime("%Y-%m")
    return render(request, "licenses.html", {"statuses": statuses, "frozen": frozen, "last_month": last_month,
                                             "this_month": now.strftime("%Y-%m")},
                  operator=operator, session=operator.session, section="licenses")


@router.get("/licenses/report")
async def license_report(request: Request, operator: AdminOperator, month: Month,
                         format_: Annotated[Literal["csv", "json"], Query(alias="format")] = "csv") -> Response:
    """The month's report as GET /admin/licenses/report gives it; a closed month is frozen by its first download."""
    async with context(request).db.unit_of_work() as session:
        report = await licensing.report(session, month, utcnow())
    if format_ == "json":
        return download(json.dumps(report, indent=2), filename=f"license-report-{month}.json",
                        media_type="application/json")
    return download(licensing.report_csv(report), filename=f"license-report-{month}.csv", media_type="text/csv")
