"""Accounts: search, the account page (limits, rating, Stripe, keys, usage), suspend and reactivate."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import BackgroundTasks, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.accounts import service as accounts
from app.accounts.schemas import AccountCreate, AccountPatch, LimitOverrides
from app.admin import service as admin
from app.billing import service as billing
from app.billing.webhooks import process_stored_event
from app.console.charts import daily_bars
from app.console.common import PAGE_SIZE, Done, Offset, blank_to_none, change, context
from app.console.forms import FormProblem, fields, text, validated
from app.console.render import page_of, render
from app.console.routing import console_router
from app.console.session import AdminOperator, CheckedForm
from app.context import ContextDep
from app.kit.clock import utcnow
from app.metering.usage import aggregate_for_account

router = console_router()

LIMIT_FIELDS = tuple(LimitOverrides.model_fields)
# The account's own usage on its page: the last 30 days.
USAGE_DAYS = 30
AccountId = Annotated[str, Path(max_length=40)]


def _stripe_dashboard(request: Request) -> str:
    key = context(request).settings.stripe_secret_key
    live = key is None or not key.get_secret_value().startswith(("sk_test_", "rk_test_"))
    return "https://dashboard.stripe.com" if live else "https://dashboard.stripe.com/test"


@router.get("/accounts")
async def list_accounts(
    request: Request, operator: AdminOperator, offset: Offset = 0,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[Literal["active", "suspended", ""] | None, Query()] = None,
    plan: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    async with context(request).db.unit_of_work() as session:
        rows = list(await accounts.search_accounts(session, query=blank_to_none(q), status=status or None,
                                                   plan_code=blank_to_none(plan), limit=PAGE_SIZE + 1,
                                                   offset=offset))
        plans = await accounts.list_plans(session)
    shown, pager = page_of(rows, path="/console/accounts", params={"q": q, "status": status, "plan": plan},
                           offset=offset, limit=PAGE_SIZE)
    return render(request, "accounts.html", {"accounts": shown, "pager": pager, "plans": plans,
                                             "q": q or "", "status": status or "", "plan": plan or ""},
                  operator=operator, session=operator.session, section="accounts")


@router.post("/accounts")
async def create_account(request: Request, operator: AdminOperator, form: CheckedForm) -> Response:
    async def work(session: AsyncSession) -> Done:
        body = validated(AccountCreate, {"name": text(form, "name"), "plan": text(form, "plan") or "free"})
        account = await admin.create_account(session, operator.principal, name=body.name, plan_code=body.plan)
        return Done(f"Account “{account.name}” created.", path=f"/console/accounts/{account.id}")

    return await change(request, operator, "/console/accounts", work)


@router.get("/accounts/{account_id}")
async def account_page(request: Request, account_id: AccountId, operator: AdminOperator) -> Response:
    today = utcnow().date()
    start = today - timedelta(days=USAGE_DAYS - 1)
    async with context(request).db.unit_of_work() as session:
        account = await accounts.get_account(session, account_id)
        keys = await accounts.list_keys(session, account_id)
        plans = await accounts.list_plans(session)
        account_billing = await billing.account_billing(session, account_id, utcnow())
        days = await aggregate_for_account(session, account_id, "day", start, today)
        models = await aggregate_for_account(session, account_id, "model", start, today)
    new_key = operator.session.take_new_key()
    if new_key is not None and new_key.get("account_id") != account_id:
        new_key = None
    chart = daily_bars([(r.group, int(r.images)) for r in days], start, today,
                       label=f"Images per day, last {USAGE_DAYS} days")
    return render(request, "account.html", {
        "account": account, "keys": keys, "plans": plans, "billing": account_billing, "new_key": new_key,
        "chart": chart, "models": models, "limit_fields": LIMIT_FIELDS, "usage_from": start, "usage_to": today,
        "stripe_dashboard": _stripe_dashboard(request),
    }, operator=operator, session=operator.session, section="accounts")


def _changes(form: Any) -> dict[str, Any]:
    """The edit form as an AccountPatch: every field it shows, overrides replaced as a whole."""
    values = fields(AccountPatch, form, ("name", "plan", "max_rating", "review_threshold", "retention_hours"))
    overrides = fields(LimitOverrides, form, LIMIT_FIELDS)
    values["limit_overrides"] = validated(LimitOverrides, overrides).model_dump()
    patch = validated(AccountPatch, values)
    return patch.model_dump(exclude_unset=True)


@router.post("/accounts/{account_id}")
async def update_account(request: Request, account_id: AccountId, operator: AdminOperator, form: CheckedForm,
                         ctx: ContextDep) -> Response:
    async def work(session: AsyncSession) -> Done:
        current = await accounts.get_account(session, account_id)
        asked = _changes(form)
        before = {"name": current.name, "plan": current.plan.code, "max_rating": current.max_rating,
                  "review_threshold": current.review_threshold, "retention_hours": current.retention_hours,
                  "limit_overrides": {k: v for k, v in current.limit_overrides.items() if v is not None}}
        after_overrides = {k: v for k, v in (asked.get("limit_overrides") or {}).items() if v is not None}
        changes = {k: v for k, v in asked.items() if k != "limit_overrides" and before.get(k) != v}
        if after_overrides != before["limit_overrides"]:
            changes["limit_overrides"] = after_overrides
        if not changes:
            return Done("Nothing to change.")
        _, cancelled = await admin.update_account(session, operator.principal, account_id, changes)
        for job_id in cancelled:
            ctx.events.job_changed(job_id)
        return Done("Account saved: " + ", ".join(sorted(changes)) + ".")

    return await change(request, operator, f"/console/accounts/{account_id}", work)


@router.post("/accounts/{account_id}/status")
async def set_status(request: Request, account_id: AccountId, operator: AdminOperator, form: CheckedForm,
                     ctx: ContextDep) -> Response:
    async def work(session: AsyncSession) -> Done:
        status = text(form, "status")
        if status not in ("active", "suspended"):
            raise FormProblem("Status must be active or suspended.", param="status")
        _, cancelled = await admin.update_account(session, operator.principal, account_id, {"status": status})
        for job_id in cancelled:
            ctx.events.job_changed(job_id)
        if status == "suspended":
            return Done(f"Account suspended; {len(cancelled)} unfinished job(s) cancelled, not charged.")
        return Done("Account reactivated: its keys work again.")

    return await change(request, operator, f"/console/accounts/{account_id}", work)


@router.post("/accounts/{account_id}/keys")
async def create_key(request: Request, account_id: AccountId, operator: AdminOperator, form: CheckedForm
                     ) -> Response:
    scopes = [s for s in ("generate", "admin", "moderator") if f"scope_{s}" in form]

    async def work(session: AsyncSession) -> Done:
        if not scopes:
            raise FormProblem("Pick at least one scope for the key.", param="scopes")
        key, token = await admin.create_key(session, operator.principal, account_id=account_id,
                                            name=text(form, "name")[:200], scopes=scopes)
        # Carried to the next page inside the encrypted session and dropped once shown there.
        operator.session.new_key = {"account_id": account_id, "key_id": key.id, "token": token,
                                    "prefix": key.prefix}
        return Done(f"Key {key.prefix}… created.", params={})

    return await change(request, operator, f"/console/accounts/{account_id}", work)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: Annotated[str, Path(max_length=40)], operator: AdminOperator,
                     form: CheckedForm, ctx: ContextDep) -> Response:
    back = f"/console/accounts/{text(form, 'account_id')}" if text(form, "account_id") else "/console/accounts"

    async def work(session: AsyncSession) -> Done:
        key, cancelled = await admin.revoke_key(session, operator.principal, key_id)
        for job_id in cancelled:
            ctx.events.job_changed(job_id)
        return Done(f"Key {key.prefix}… revoked; {len(cancelled)} unfinished job(s) cancelled.",
                    path=f"/console/accounts/{key.account_id}")

    return await change(request, operator, back, work)


@router.post("/accounts/{account_id}/stripe")
async def link_stripe(request: Request, account_id: AccountId, operator: AdminOperator, form: CheckedForm,
                      ctx: ContextDep, background: BackgroundTasks) -> Response:
    customer = text(form, "stripe_customer_id")
    reopened: list[str] = []

    async def work(session: AsyncSession) -> Done:
        if not customer.startswith("cus_") or len(customer) > 255:
            raise FormProblem("A Stripe customer id looks like cus_…", param="stripe_customer_id")
        reopened.extend(await admin.link_stripe_customer(session, operator.principal,
                                                         getattr(request.app.state, "stripe", None), account_id,
                                                         customer))
        return Done(f"Linked to Stripe customer {customer}.")

    async def apply_reopened() -> None:
        # After the commit: events that arrived before the link now find the account.
        for event_id in reopened:
            background.add_task(process_stored_event, ctx.db, ctx.settings, event_id)

    return await change(request, operator, f"/console/accounts/{account_id}", work, after_commit=apply_reopened)
