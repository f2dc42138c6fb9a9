"""Plans: every plan's limits, a new plan, a plan's edit form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.accounts import service as accounts
from app.accounts.schemas import PlanCreate, PlanFields
from app.admin import service as admin
from app.console.common import Done, change, context
from app.console.forms import fields, validated
from app.console.render import render
from app.console.routing import console_router
from app.console.session import AdminOperator, CheckedForm

router = console_router()

# Shown and edited in this order; the two flags are checkboxes.
PLAN_FIELDS = ("name", "monthly_image_quota", "daily_image_quota", "requests_per_minute", "burst",
               "max_concurrent_jobs", "max_queued_jobs", "max_width", "max_height", "max_steps", "max_n", "max_loras",
               "priority", "allowed_models", "retention_hours", "stripe_price_id", "stripe_metered_price_id", "is_paid")
CHECKBOXES = ("is_paid",)
PlanCode = Annotated[str, Path(max_length=64)]


@router.get("/plans")
async def list_plans(request: Request, operator: AdminOperator) -> Response:
    async with context(request).db.unit_of_work() as session:
        plans = await accounts.list_plans(session)
    return render(request, "plans.html", {"plans": plans, "defaults": PlanCreate.model_fields},
                  operator=operator, session=operator.session, section="plans")


@router.post("/plans")
async def create_plan(request: Request, operator: AdminOperator, form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        values = fields(PlanCreate, form, ("code", *PLAN_FIELDS), checkboxes=CHECKBOXES, omit_blank=True)
        plan = await admin.create_plan(session, operator.principal, validated(PlanCreate, values).model_dump())
        return Done(f"Plan “{plan.code}” created.", path=f"/console/plans/{plan.code}")

    return await change(request, operator, "/console/plans", work)


@router.get("/plans/{code}")
async def plan_page(request: Request, code: PlanCode, operator: AdminOperator) -> Response:
    async with context(request).db.unit_of_work() as session:
        plan = await accounts.get_plan(session, code)
    return render(request, "plan.html", {"plan": plan, "fields": PLAN_FIELDS}, operator=operator,
                  session=operator.session, section="plans")


@router.post("/plans/{code}")
async def update_plan(request: Request, code: PlanCode, operator: AdminOperator, form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        plan = await accounts.get_plan(session, code)
        asked = validated(PlanFields, fields(PlanFields, form, PLAN_FIELDS, checkboxes=CHECKBOXES))
        changes: dict[str, Any] = {k: v for k, v in asked.model_dump(exclude_unset=True).items()
                                   if getattr(plan, k) != v}
        if not changes:
            return Done("Nothing to change.")
        await admin.update_plan(session, operator.principal, code, changes)
        return Done("Plan saved: " + ", ".join(sorted(changes)) + ". It applies from the next request.")

    return await change(request, operator, f"/console/plans/{code}", work)
