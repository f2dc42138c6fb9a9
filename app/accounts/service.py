"""Accounts, keys and authentication."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.models import SCOPES, Account, ApiKey, Plan
from app.billing.errors import PaymentRequired
from app.errors import AuthenticationError, Conflict, InvalidRequest, NotFound, PermissionDenied
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.tokens import generate_token, parse_prefix, token_matches
from app.settlement import service as settlement


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its account and the account's plan, as of this request."""

    key: ApiKey
    account: Account

    @property
    def plan(self) -> Plan:
        return self.account.plan

    def has_scope(self, scope: str) -> bool:
        return scope in self.key.scopes


async def create_account(session: AsyncSession, *, name: str, plan_code: str = "free") -> Account:
    plan = await repo.plan_by_code(session, plan_code)
    if plan is None:
        raise InvalidRequest(f"Unknown plan '{plan_code}'.", code="unknown_plan", param="plan")
    account = Account(id=new_id("acct"), name=name, plan_id=plan.id, status="active", created_at=utcnow())
    account.plan = plan
    session.add(account)
    await session.flush()
    return account


async def get_account(session: AsyncSession, account_id: str) -> Account:
    account = await repo.account_by_id(session, account_id)
    if account is None:
        raise NotFound(f"No account '{account_id}'.", param="id")
    return account


async def list_accounts(session: AsyncSession, *, limit: int, offset: int) -> Sequence[Account]:
    return await repo.list_accounts(session, limit=limit, offset=offset)


async def create_key(
    session: AsyncSession, *, account_id: str, name: str = "", scopes: Iterable[str] = ("generate",),
    limit_overrides: dict[str, Any] | None = None, metadata_mode: str = "full",
) -> tuple[ApiKey, str]:
    """A new key for the account; the clear token is returned here and never stored."""
    account = await get_account(session, account_id)
    scope_list = sorted(set(scopes))
    unknown = [s for s in scope_list if s not in SCOPES]
    if unknown or not scope_list:
        raise InvalidRequest(f"Scopes must be among {', '.join(SCOPES)}.", code="invalid_scope", param="scopes")
    token = generate_token()
    key = ApiKey(
        id=new_id("key"), account_id=account.id, name=name, prefix=token.prefix, key_hash=token.hash,
        scopes=scope_list, created_at=utcnow(),
        limit_overrides={k: v for k, v in (limit_overrides or {}).items() if v is not None},
        metadata_mode=metadata_mode,
    )
    session.add(key)
    await session.flush()
    return key, token.token


async def update_key(session: AsyncSession, key_id: str, *, metadata_mode: str | None = None) -> ApiKey:
    """Changes a key's settings; a job keeps what its key said when it was enqueued (copied to the job)."""
    key = await repo.key_by_id(session, key_id)
    if key is None:
        raise NotFound(f"No key '{key_id}'.", param="id")
    if metadata_mode is not None:
        key.metadata_mode = metadata_mode
    await session.flush()
    return key


async def revoke_key(session: AsyncSession, key_id: str) -> tuple[ApiKey, list[str]]:
    """Revokes the key and cancels its unfinished jobs (not charged); returns the key and the cancelled job ids.

    A revoked key's work must not go on being produced and billed after the partner (or an admin)
    pulled it, so its queued, running and delivering jobs end here, in the same transaction.
    """
    key = await repo.key_by_id(session, key_id)
    if key is None:
        raise NotFound(f"No key '{key_id}'.", param="id")
    now = utcnow()
    await repo.revoke_key(session, key_id, now)
    cancelled = await _cancel_jobs(session, await repo.unfinished_job_ids(session, api_key_id=key_id), now)
    await session.refresh(key)
    return key, cancelled


async def cancel_unfinished_jobs(session: AsyncSession, account_id: str) -> list[str]:
    """Cancels the account's queued, running and delivering jobs (not charged); returns their ids.
    What a suspension does, whoever decides it (an admin, or moderation's strike threshold)."""
    return await _cancel_jobs(session, await repo.unfinished_job_ids(session, account_id=account_id), utcnow())


async def _cancel_jobs(session: AsyncSession, job_ids: Sequence[str], now: datetime) -> list[str]:
    """Ends each job through the one settlement path; those that settled meanwhile are left as they are."""
    return [job_id for job_id in job_ids if await settlement.cancel(session, job_id, now)]


async def authenticate(session: AsyncSession, token: str | None) -> Principal:
    """Resolves a bearer token; every failure looks the same to the caller on purpose."""
    if not token:
        raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    prefix = parse_prefix(token)
    key = await repo.key_by_prefix(session, prefix) if prefix else None
    if key is None or not token_matches(token, key.key_hash) or key.revoked_at is not None:
        raise AuthenticationError("Invalid or revoked API key.")
    if key.account.status != "active":
        raise PermissionDenied("This account is suspended.", code="account_suspended")
    grace_until = key.account.billing_grace_until
    if grace_until is not None and utcnow() >= grace_until:
        raise PaymentRequired("This account has an invoice unpaid past its grace period; the API is available "
                              "again as soon as it is paid.")
    return Principal(key=key, account=key.account)


async def list_keys(session: AsyncSession, account_id: str) -> Sequence[ApiKey]:
    return await repo.keys_of_account(session, account_id)


async def list_plans(session: AsyncSession) -> Sequence[Plan]:
    return await repo.list_plans(session)


async def get_plan(session: AsyncSession, code: str) -> Plan:
    plan = await repo.plan_by_code(session, code)
    if plan is None:
        raise NotFound(f"No plan '{code}'.", param="code")
    return plan


async def _check_price_free(session: AsyncSession, price_id: str | None, code: str) -> None:
    """A Stripe flat price names one plan: subscriptions are mapped back to plans by it."""
    if price_id is None:
        return
    holder = (await session.execute(select(Plan).where(Plan.stripe_price_id == price_id))).scalar_one_or_none()
    if holder is not None and holder.code != code:
        raise Conflict(f"Stripe price '{price_id}' already belongs to plan '{holder.code}'.", code="price_in_use",
                       param="stripe_price_id")


async def create_plan(session: AsyncSession, values: dict[str, Any]) -> Plan:
    if await repo.plan_by_code(session, values["code"]) is not None:
        raise Conflict(f"Plan '{values['code']}' already exists.", code="plan_exists", param="code")
    await _check_price_free(session, values.get("stripe_price_id"), values["code"])
    plan = Plan(**values, created_at=utcnow())
    session.add(plan)
    await session.flush()
    return plan


async def update_plan(session: AsyncSession, code: str, changes: dict[str, Any]) -> Plan:
    plan = await get_plan(session, code)
    await _check_price_free(session, changes.get("stripe_price_id"), code)
    for name, value in changes.items():
        setattr(plan, name, value)
    await session.flush()
    return plan


async def update_account(session: AsyncSession, account_id: str,
                         changes: dict[str, Any]) -> tuple[Account, list[str]]:
    """Applies ``changes``; returns the account and the ids of the jobs cancelled by a suspension.

    Suspending an account stops its work at once: its queued, running and delivering jobs are
    cancelled (not charged) in the same transaction, so a suspended account is never billed for
    images made after the decision.
    """
    account = await get_account(session, account_id)
    # Repeating a suspension is harmless and sweeps up any job that slipped in before it.
    suspending = changes.get("status") == "suspended"
    for field in ("max_rating", "review_threshold"):
        if field in changes and changes[field] is None:
            raise InvalidRequest(f"'{field}' cannot be null.", code="invalid_value", param=field)
    if "plan" in changes:
        plan = await repo.plan_by_code(session, changes.pop("plan"))
        if plan is None:
            raise InvalidRequest("Unknown plan.", code="unknown_plan", param="plan")
        account.plan_id, account.plan = plan.id, plan
    if "limit_overrides" in changes:
        overrides = changes.pop("limit_overrides") or {}
        account.limit_overrides = {k: v for k, v in overrides.items() if v is not None}
    for name, value in changes.items():
        setattr(account, name, value)
    await session.flush()
    cancelled: list[str] = []
    if suspending:
        cancelled = await cancel_unfinished_jobs(session, account_id)
    return account, cancelled


async def search_accounts(session: AsyncSession, *, query: str | None = None, status: str | None = None,
                          plan_code: str | None = None, limit: int, offset: int) -> Sequence[Account]:
    return await repo.search_accounts(session, query=query, status=status, plan_code=plan_code, limit=limit,
                                      offset=offset)


async def account_status_counts(session: AsyncSession) -> dict[str, int]:
    """How many accounts are in each status (``active``, ``suspended``)."""
    return await repo.count_accounts_by_status(session)


async def principal_for_key_id(session: AsyncSession, key_id: str) -> Principal:
    """The principal of a key proven earlier by its secret (a console session keeps only the key's id).

    Refused exactly as :func:`authenticate` refuses it, so revoking the key, suspending its account or
    an invoice unpaid past its grace period ends such a session on its next request.
    """
    key = await repo.key_by_id(session, key_id)
    if key is None or key.revoked_at is not None:
        raise AuthenticationError("Invalid or revoked API key.")
    if key.account.status != "active":
        raise PermissionDenied("This account is suspended.", code="account_suspended")
    grace_until = key.account.billing_grace_until
    if grace_until is not None and utcnow() >= grace_until:
        raise PaymentRequired("This account has an invoice unpaid past its grace period.")
    return Principal(key=key, account=key.account)
