"""Billing: the usage outbox towards Stripe, what is stuck and why, past-due accounts, reconciliation."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.admin import service as admin
from app.billing import service as billing
from app.billing.reconcile import reconcile
from app.console.common import Done, change, context
from app.console.forms import FormProblem, text
from app.console.render import render
from app.console.routing import console_router, redirect
from app.console.session import AdminOperator, CheckedForm
from app.errors import AppError
from app.kit.clock import utcnow

router = console_router()

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
# Which decisions each set-aside status takes (as POST /admin/billing/outbox/{id}/resolve allows).
RESOLUTIONS = {"unconfirmed": ("resend", "mark_sent", "dismiss"), "failed": ("resend", "dismiss"),
               "expired": ("dismiss",)}


@router.get("/billing")
async def billing_page(request: Request, operator: AdminOperator) -> Response:
    ctx = context(request)
    now = utcnow()
    async with ctx.db.unit_of_work() as session:
        overview = await billing.overview(session, ctx.settings, now)
        past_due = await billing.past_due_accounts(session, now)
        last: dict[str, Any] | None = await billing.last_reconciliation(session)
    return render(request, "billing.html", {
        "b": overview, "past_due": past_due, "last": last, "month": now.strftime("%Y-%m"),
        "resolutions": RESOLUTIONS,
    }, operator=operator, session=operator.session, section="billing")


@router.post("/billing/reconcile")
async def run_reconciliation(request: Request, operator: AdminOperator, form: CheckedForm) -> Response:
    """Ledger against outbox against Stripe's meter totals for one month, as `ponyserve billing reconcile` does."""
    month = text(form, "month")
    if not _MONTH.match(month):
        operator.session.say("Pick a month (YYYY-MM).", "error")
        return redirect(request, "/console/billing")
    ctx = context(request)
    try:
        report = await reconcile(ctx.db, ctx.settings, month, getattr(request.app.state, "stripe", None))
    except AppError as exc:
        operator.session.say(exc.message, "error")
        return redirect(request, "/console/billing")

    async def work(session: AsyncSession) -> Done:
        await admin.record_reconciliation(session, operator.principal, report)
        found = len(report["discrepancies"])
        return Done(f"Reconciled {month}: " + ("everything agrees." if report["ok"] else f"{found} discrepancies."))

    return await change(request, operator, "/console/billing", work)


@router.post("/billing/outbox/{usage_id}/resolve")
async def resolve(request: Request, usage_id: Annotated[int, Path(ge=1, le=2**63 - 1)], operator: AdminOperator,
                  form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        action = text(form, "action")
        if action not in ("resend", "mark_sent", "dismiss"):
            raise FormProblem("Choose resend, mark_sent or dismiss.", param="action")
        row = await admin.resolve_outbox(session, operator.principal, context(request).settings, usage_id, action)
        return Done(f"Outbox event {usage_id}: {action.replace('_', ' ')} → {row.status}.")

    return await change(request, operator, "/console/billing", work)
