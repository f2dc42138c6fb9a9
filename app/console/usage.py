"""Usage: images per day as a chart, totals by account, key, model, day or plan, and the CSV of them.

The numbers are those of GET /admin/usage (the daily rollup; plans from the ledger, which knows the
plan each image was made under), and the CSV is that endpoint's, byte for byte.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.console.charts import daily_bars
from app.console.common import blank_to_none, context
from app.console.render import download, render
from app.console.routing import console_router
from app.console.session import AdminOperator
from app.errors import InvalidRequest
from app.kit.clock import utcnow
from app.metering.usage import (
    ReportRow,
    aggregate,
    aggregate_by_plan,
    aggregate_for_account,
    report_csv,
    report_rows,
)

router = console_router()

Grouping = Literal["account", "key", "model", "day", "plan"]
# As GET /admin/usage allows.
MAX_RANGE = timedelta(days=3660)
From = Annotated[date | None, Query(alias="from")]
To = Annotated[date | None, Query()]
GroupParam = Annotated[Grouping, Query()]
AccountParam = Annotated[str | None, Query(max_length=40)]


def _range(start: date | None, end: date | None) -> tuple[date, date]:
    today = utcnow().date()
    first, last = start or today.replace(day=1), end or today
    if last < first:
        raise InvalidRequest("'to' is before 'from'.", code="invalid_range", param="to")
    if last - first > MAX_RANGE:
        raise InvalidRequest("The range may span at most ten years.", code="invalid_range", param="from")
    return first, last


async def _rows(session: AsyncSession, group_by: Grouping, start: date, end: date, account: str | None
                ) -> list[ReportRow]:
    if group_by == "plan":
        return report_rows(await aggregate_by_plan(session, start, end))
    if account is not None:
        return report_rows(await aggregate_for_account(session, account, group_by, start, end))
    return report_rows(await aggregate(session, group_by, start, end))


@router.get("/usage")
async def usage_page(request: Request, operator: AdminOperator, from_: From = None, to: To = None,
                     group_by: GroupParam = "account", account: AccountParam = None) -> Response:
    start, end = _range(from_, to)
    account = blank_to_none(account)
    if group_by == "plan":
        account = None  # the plan view is the whole deployment's
    async with context(request).db.unit_of_work() as session:
        rows = await _rows(session, group_by, start, end, account)
        days = (await aggregate_for_account(session, account, "day", start, end) if account is not None
                else await aggregate(session, "day", start, end))
    label = "Images per day" + (f" for {account}" if account else "")
    chart = daily_bars([(r.group, int(r.images)) for r in days], start, end, label=label)
    params: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
                              "account": account}
    return render(request, "usage.html", {
        "rows": rows, "chart": chart, "start": start, "end": end, "group_by": group_by, "account": account or "",
        "params": params, "total": sum(r.images for r in rows),
    }, operator=operator, session=operator.session, section="usage")


@router.get("/usage.csv")
async def usage_csv(request: Request, operator: AdminOperator, from_: From = None, to: To = None,
                    group_by: GroupParam = "account", account: AccountParam = None) -> Response:
    start, end = _range(from_, to)
    account = None if group_by == "plan" else blank_to_none(account)
    async with context(request).db.unit_of_work() as session:
        rows = await _rows(session, group_by, start, end, account)
    suffix = f"-{account}" if account else ""
    return download(report_csv(group_by, rows), filename=f"usage-{group_by}-{start}-{end}{suffix}.csv",
                    media_type="text/csv")
