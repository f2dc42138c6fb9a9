"""Admin routes over accounts and keys (scope ``admin``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.accounts import service as accounts
from app.accounts.auth import AdminCaller
from app.accounts.schemas import (
    AccountCreate,
    AccountDetail,
    AccountList,
    AccountOut,
    AccountPatch,
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyPatch,
    PlanCreate,
    PlanDetail,
    PlanFields,
)
from app.context import ContextDep
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, ErrorResponse
from app.kit.pagination import PageDep

router = APIRouter(prefix="/admin", tags=["admin"], responses=COMMON_ERROR_RESPONSES)
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@router.post("/accounts", status_code=201, response_model=AccountOut)
async def create_account(body: AccountCreate, _: AdminCaller, session: SessionDep) -> AccountOut:
    """Create a customer account on a plan (default `free`)."""
    account = await accounts.create_account(session, name=body.name, plan_code=body.plan)
    return AccountOut.model_validate(account)


@router.get("/accounts", response_model=AccountList)
async def list_accounts(_: AdminCaller, session: SessionDep, page: PageDep) -> AccountList:
    """Accounts, oldest first."""
    rows = await accounts.list_accounts(session, limit=page.limit, offset=page.offset)
    return AccountList(data=[AccountOut.model_validate(a) for a in rows], limit=page.limit, offset=page.offset)


@router.get("/accounts/{account_id}", response_model=AccountDetail, responses=_404)
async def get_account(account_id: str, _: AdminCaller, session: SessionDep) -> AccountDetail:
    """One account with its plan and limit overrides."""
    return AccountDetail.model_validate(await accounts.get_account(session, account_id))


@router.patch("/accounts/{account_id}", response_model=AccountDetail, responses=_404)
async def update_account(account_id: str, body: AccountPatch, _: AdminCaller, session: SessionDep,
                         ctx: ContextDep) -> AccountDetail:
    """Change an account's name, plan, status, limit overrides, `max_rating` (`safe|questionable|explicit`:
    rating tags and explicit-term refusals) or `review_threshold` (output classifier score above which images
    are withheld for review).

    Status `suspended` refuses the account's keys, cancels its queued and running jobs (they are not
    charged) and stops its signed image links from working."""
    changes = body.model_dump(exclude_unset=True)
    account, cancelled = await accounts.update_account(session, account_id, changes)
    _wake(ctx, cancelled)
    return AccountDetail.model_validate(account)


@router.get("/plans", response_model=list[PlanDetail])
async def list_plans(_: AdminCaller, session: SessionDep) -> list[PlanDetail]:
    """Every plan with its limits."""
    return [PlanDetail.model_validate(p) for p in await accounts.list_plans(session)]


@router.post("/plans", status_code=201, response_model=PlanDetail, responses={409: {"model": ErrorResponse}})
async def create_plan(body: PlanCreate, _: AdminCaller, session: SessionDep) -> PlanDetail:
    """Create a plan. Unset limits are unlimited (quotas, rate, concurrency) or take the defaults shown."""
    return PlanDetail.model_validate(await accounts.create_plan(session, body.model_dump()))


@router.patch("/plans/{code}", response_model=PlanDetail,
              responses={**_404, 409: {"model": ErrorResponse, "description": "A Stripe price names another plan"}})
async def update_plan(code: str, body: PlanFields, _: AdminCaller, session: SessionDep) -> PlanDetail:
    """Change a plan's limits; fields sent as null become unlimited. Applies from the next request."""
    return PlanDetail.model_validate(await accounts.update_plan(session, code, body.model_dump(exclude_unset=True)))


@router.post("/accounts/{account_id}/keys", status_code=201, response_model=KeyCreated, responses=_404)
async def create_key(account_id: str, body: KeyCreate, _: AdminCaller, session: SessionDep) -> KeyCreated:
    """Issue an API key. The secret `key` is in this response only; store it now."""
    overrides = body.limit_overrides.model_dump() if body.limit_overrides else None
    key, token = await accounts.create_key(session, account_id=account_id, name=body.name, scopes=body.scopes,
                                           limit_overrides=overrides, metadata_mode=body.metadata)
    return KeyCreated(**KeyOut.model_validate(key).model_dump(), key=token)


@router.get("/accounts/{account_id}/keys", response_model=list[KeyOut], responses=_404)
async def list_keys(account_id: str, _: AdminCaller, session: SessionDep) -> list[KeyOut]:
    """The account's keys (prefixes only; secrets are never stored)."""
    await accounts.get_account(session, account_id)
    return [KeyOut.model_validate(k) for k in await accounts.list_keys(session, account_id)]


@router.patch("/keys/{key_id}", response_model=KeyOut, responses=_404)
async def update_key(key_id: str, body: KeyPatch, _: AdminCaller, session: SessionDep) -> KeyOut:
    """Change a key's `metadata` mode (`full|provenance_only|none`: what its image files carry). Jobs already
    enqueued keep the mode they were enqueued with."""
    key = await accounts.update_key(session, key_id, metadata_mode=body.metadata)
    return KeyOut.model_validate(key)


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=_404)
async def revoke_key(key_id: str, _: AdminCaller, session: SessionDep, ctx: ContextDep) -> KeyOut:
    """Revoke a key: its next request is refused with 401, its queued and running jobs are cancelled (not
    charged) and the signed image links of its jobs stop working."""
    key, cancelled = await accounts.revoke_key(session, key_id)
    _wake(ctx, cancelled)
    return KeyOut.model_validate(key)


def _wake(ctx: ContextDep, job_ids: list[str]) -> None:
    """Wakes this process's waiters on the cancelled jobs, as the caller's own cancel does; waiters in other
    replicas (and any that re-read before the commit) are woken by the NOTIFY settlement sends on commit."""
    for job_id in job_ids:
        ctx.events.job_changed(job_id)
