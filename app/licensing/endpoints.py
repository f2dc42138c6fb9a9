"""Admin routes for licences: live status, new terms, revenue entries, monthly audit reports."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from app.accounts import repository as accounts_repo
from app.accounts.auth import AdminCaller
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, InvalidRequest
from app.kit.clock import utcnow
from app.licensing import service
from app.licensing.metrics import LICENSES
from app.licensing.schemas import (
    LicenseStatusOut,
    LicenseTermsOut,
    LicenseVersionCreate,
    RevenueCreate,
    RevenueOut,
    RevenueStatus,
)

router = APIRouter(prefix="/admin", tags=["licensing"], responses=COMMON_ERROR_RESPONSES)


@router.get("/licenses", response_model=list[LicenseStatusOut])
async def license_status(_: AdminCaller, session: SessionDep) -> list[LicenseStatusOut]:
    """Per licence: the terms in force, the cap period, used, reserved, remaining, projection and state
    (`ok`, `warning`, `critical`, `exhausted` against the licence's thresholds), and trailing-12-month revenue."""
    rows = await service.statuses(session, utcnow())
    # What an admin just read is what the licence gauges show, without waiting for their refresh.
    LICENSES.rows = rows
    return [
        LicenseStatusOut(
            license=LicenseTermsOut.model_validate(s.terms), period_start=s.period_start, period_end=s.period_end,
            used=s.used, reserved=s.reserved, cap=s.cap, remaining=s.remaining, overage=s.overage,
            projected_period_end=s.projected, state=s.state,
            revenue=RevenueStatus(trailing_12m_usd=s.revenue_12m, cap_usd=s.terms.annual_revenue_cap_usd,
                                  state=s.revenue_state),
        )
        for s in rows
    ]


@router.post("/licenses", status_code=201, response_model=LicenseTermsOut)
async def add_license_version(body: LicenseVersionCreate, _: AdminCaller, session: SessionDep) -> LicenseTermsOut:
    """Record new terms for a licence (a new version; earlier versions stay for the audit trail)."""
    spec = body.model_dump(exclude={"effective_from"})
    row = await service.add_version(session, service.LicenseSpec(**spec), body.effective_from or utcnow())
    return LicenseTermsOut.model_validate(row)


@router.post("/revenue", status_code=201, response_model=RevenueOut)
async def add_revenue(body: RevenueCreate, _: AdminCaller, session: SessionDep) -> RevenueOut:
    """Record revenue (counted against licences' annual revenue caps). Idempotent on `reference`.
    `account_id`, when given, must name an existing account."""
    # Checked here: the foreign key would otherwise refuse it at INSERT, as a 500.
    if body.account_id is not None and await accounts_repo.account_by_id(session, body.account_id) is None:
        raise InvalidRequest(f"Unknown account '{body.account_id}'.", code="unknown_account", param="account_id")
    entry = await service.record_revenue(session, amount_usd=body.amount_usd, occurred_at=body.occurred_at or utcnow(),
                                         source="admin", reference=body.reference, note=body.note,
                                         account_id=body.account_id)
    return RevenueOut.model_validate(entry)


@router.get("/licenses/report", responses={200: {"content": {"application/json": {}, "text/csv": {}},
                                                 "description": "JSON, or CSV with Accept: text/csv"}})
async def license_report(
    _: AdminCaller,
    session: SessionDep,
    month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM (UTC)")],
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The month's audit report per licence and model, computed from the usage ledger: images split by
    free/paid plan, daily counts, peak day, cap, overage and fallbacks. A closed month's report is frozen
    the first time it is requested and carries a checksum; later changes cannot alter it."""
    if not 1 <= int(month[5:]) <= 12:
        raise InvalidRequest("month must be YYYY-MM.", code="invalid_month", param="month")
    report = await service.report(session, month, utcnow())
    if accept and "text/csv" in accept:
        return Response(service.report_csv(report), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="license-report-{month}.csv"'})
    return Response(json.dumps(report), media_type="application/json")
