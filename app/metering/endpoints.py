"""Usage: the caller's own (scope generate) and the admins' reports (scope admin)."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from app.accounts.auth import AdminCaller, GenerateCaller
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, InvalidRequest
from app.kit.clock import utcnow
from app.metering.schemas import MyUsage, PeriodUsageOut, ScopeUsage, UsageReport, UsageRow
from app.metering.usage import GroupBy, aggregate
from app.quotas.service import PeriodUsage, current_usage

router = APIRouter(responses=COMMON_ERROR_RESPONSES)


def _period(p: PeriodUsage) -> PeriodUsageOut:
    return PeriodUsageOut(used=p.used, reserved=p.reserved, limit=p.limit, remaining=p.remaining,
                          resets_at=p.resets_at)


@router.get("/v1/usage", response_model=MyUsage, tags=["usage"])
async def my_usage(caller: GenerateCaller, session: SessionDep) -> MyUsage:
    """Images used and reserved today and this month (UTC), for this key and its account, with what remains."""
    usage = await current_usage(session, caller.account, caller.key, utcnow())
    return MyUsage(
        account_id=caller.account.id, key_id=caller.key.id,
        account=ScopeUsage(day=_period(usage["account"]["day"]), month=_period(usage["account"]["month"])),
        key=ScopeUsage(day=_period(usage["key"]["day"]), month=_period(usage["key"]["month"])),
    )


@router.get(
    "/admin/usage",
    response_model=UsageReport,
    tags=["admin"],
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with Accept: text/csv"}},
)
async def usage_report(
    _: AdminCaller,
    session: SessionDep,
    group_by: Annotated[GroupBy, Query(description="account, key, model or day")] = "account",
    from_: Annotated[date | None, Query(alias="from", description="First day (UTC), default: this month's first")]
    = None,
    to: Annotated[date | None, Query(description="Last day (UTC, inclusive), default: today")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Images, megapixel-steps, GPU seconds and price units per group over a range of days."""
    today = utcnow().date()
    start = from_ or today.replace(day=1)
    end = to or today
    if end < start:
        raise InvalidRequest("'to' is before 'from'.", code="invalid_range", param="to")
    if end - start > timedelta(days=3660):
        raise InvalidRequest("The range may span at most ten years.", code="invalid_range", param="from")
    rows = [UsageRow(group=str(r.group), images=int(r.images), megapixel_steps=round(float(r.megapixel_steps), 6),
                     gpu_seconds=round(float(r.gpu_seconds), 6), price_units=int(r.price_units))
            for r in await aggregate(session, group_by, start, end)]
    if accept and "text/csv" in accept:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([group_by, "images", "megapixel_steps", "gpu_seconds", "price_units"])
        for row in rows:
            writer.writerow([row.group, row.images, row.megapixel_steps, row.gpu_seconds, row.price_units])
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="usage-{group_by}-{start}-{end}.csv"'})
    report = UsageReport.model_validate({"group_by": group_by, "from": start, "to": end, "rows": rows,
                                         "total_images": sum(r.images for r in rows)})
    return Response(report.model_dump_json(by_alias=True), media_type="application/json")
