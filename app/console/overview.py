"""The overview: what an operator checks first, each number linking to its page."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from app.admin import service as admin
from app.console.charts import daily_bars
from app.console.common import context
from app.console.render import render
from app.console.routing import console_router, redirect
from app.console.session import SignedIn
from app.kit.clock import utcnow
from app.quotas.periods import day_start

router = console_router()

# Licences listed on the overview: those nearest their caps.
NEAREST_LICENSES = 4


@router.get("")
async def console_root(request: Request) -> Response:
    return redirect(request, "/console/")


@router.get("/")
async def overview(request: Request, operator: SignedIn) -> Response:
    if not operator.is_admin:
        return redirect(request, "/console/moderation/reviews")
    ctx = context(request)
    now = utcnow()
    async with ctx.db.unit_of_work() as session:
        data = await admin.overview(session, ctx.settings, now)
    chart = daily_bars(data.days, data.days_from, day_start(now), label="Images per day")
    capped = [s for s in data.licenses if s.cap is not None][:NEAREST_LICENSES]
    return render(request, "overview.html", {"o": data, "chart": chart, "capped": capped, "now": now},
                  operator=operator, session=operator.session, section="overview")
