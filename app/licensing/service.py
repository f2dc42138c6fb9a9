"""Licence policy per model: who may use it, caps reserved with the job, live status, audit reports.

A licence cap is reserved in the same transaction as the job and its quota, under a
per-licence row lock, so concurrent requests on any number of API replicas can never
push a licence past its cap. Settling (used/released) happens with the job's quota
settlement, exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Plan
from app.config import LicenseSpec
from app.errors import InvalidRequest, PermissionDenied
from app.licensing import repository as repo
from app.licensing.models import License, LicenseReport, RevenueEntry

__all__ = ["LicenseSpec"]
from app.queue.models import Job
from app.quotas.periods import day_start, month_start, next_month

State = Literal["ok", "warning", "critical", "exhausted"]
_TERMS = ("name", "url", "monetization_allowed", "allowed_plans", "monthly_image_cap", "cap_period",
          "annual_revenue_cap_usd", "warning_thresholds", "at_cap", "fallback_model")


def _terms(row: License | LicenseSpec) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in _TERMS}
    if values["annual_revenue_cap_usd"] is not None:
        values["annual_revenue_cap_usd"] = Decimal(str(values["annual_revenue_cap_usd"])).quantize(Decimal("0.01"))
    return values


async def add_version(session: AsyncSession, spec: LicenseSpec, effective_from: datetime) -> License:
    latest = await repo.latest_version(session, spec.id)
    row = License(id=spec.id, version=(latest.version + 1) if latest else 1, effective_from=effective_from,
                  **_terms(spec))
    await repo.add_version(session, row)
    return row


async def sync_from_specs(session: AsyncSession, specs: list[LicenseSpec], now: datetime) -> list[str]:
    """Records a new version of every configured licence whose terms changed; returns their ids."""
    changed = []
    for spec in specs:
        latest = await repo.latest_version(session, spec.id)
        if latest is None or _terms(latest) != _terms(spec):
            await add_version(session, spec, now)
            changed.append(spec.id)
    return changed


async def terms_for(session: AsyncSession, license_id: str | None, now: datetime) -> License | None:
    return None if license_id is None else await repo.current_version(session, license_id, now)


def check_plan(terms: License | None, plan: Plan, model: str, *, kind: str = "model", param: str = "model") -> None:
    """Refuses a plan the licence does not allow (403 license_forbids_plan). ``kind`` and ``param`` name
    what carries the licence: a model, or a LoRA (``kind="LoRA"``, ``param="loras"``)."""
    if terms is None:
        return
    if plan.is_paid and not terms.monetization_allowed:
        raise PermissionDenied(
            f"The licence of {kind} '{model}' ({terms.name}) forbids monetised inference; it is not available on "
            f"paid plans.", code="license_forbids_plan", param=param)
    if terms.allowed_plans is not None and plan.code not in terms.allowed_plans:
        raise PermissionDenied(f"The licence of {kind} '{model}' ({terms.name}) does not allow the '{plan.code}' "
                               "plan.", code="license_forbids_plan", param=param)


def window(terms: License, now: datetime) -> tuple[date, date, datetime]:
    """The cap period containing ``now``: first day, last day (inclusive), and when it ends."""
    today = day_start(now)
    if terms.cap_period == "rolling_30d":
        return today - timedelta(days=29), today, datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    start = month_start(now)
    end = next_month(start)
    return start, (end - timedelta(days=1)).date(), end


@dataclass(frozen=True)
class Reservation:
    outcome: Literal["reserved", "overage", "fallback"]


async def reserve(session: AsyncSession, job: Job, terms: License | None, now: datetime) -> Reservation:
    """Reserves the job's images on its licence, or says the cap policy applies.

    Must run after the job's quota reservation (it sets ``job.quota_day``), inside the same
    transaction. Raises 403 license_cap_reached for a ``reject`` licence at its cap.
    """
    assert job.quota_day is not None
    if job.license is None:
        return Reservation("reserved")
    if terms is None or terms.monthly_image_cap is None:
        await repo.add_reserved(session, job.license, job.quota_day, job.n)
        return Reservation("reserved")
    await repo.lock(session, job.license)
    start, end, resets = window(terms, now)
    used, reserved, _ = await repo.window_totals(session, job.license, start, end)
    if used + reserved + job.n <= terms.monthly_image_cap:
        await repo.add_reserved(session, job.license, job.quota_day, job.n)
        return Reservation("reserved")
    if terms.at_cap == "allow_overage":
        job.license_overage = True
        await repo.add_reserved(session, job.license, job.quota_day, job.n)
        return Reservation("overage")
    if terms.at_cap == "fallback":
        return Reservation("fallback")
    raise PermissionDenied(
        f"Model '{job.model}' has reached its licence's image cap for this period ({terms.monthly_image_cap}); "
        f"it resets at {resets.isoformat()}.", code="license_cap_reached", param="model",
        extra={"limit": terms.monthly_image_cap, "resets_at": resets.isoformat()},
    )


async def settle(session: AsyncSession, job: Job, delivered: int) -> None:
    if job.license is None or job.quota_day is None:
        return
    used = min(delivered, job.n)
    await repo.settle(session, job.license, job.quota_day, reserved=job.n, used=used,
                      overage=used if job.license_overage else 0)


async def record_late_use(session: AsyncSession, job: Job, images: int, day: date) -> None:
    """Images of ``job`` delivered after its reservation was settled (released by review), counted on ``day``."""
    if job.license is not None:
        await repo.add_used(session, job.license, day, images, overage=job.license_overage)


# -- live status -------------------------------------------------------------------------


def state_of(fraction: float | None, thresholds: list[float]) -> State:
    if fraction is None:
        return "ok"
    if fraction >= 1:
        return "exhausted"
    if fraction >= thresholds[-1]:
        return "critical"
    if fraction >= thresholds[0]:
        return "warning"
    return "ok"


@dataclass(frozen=True)
class LicenseStatus:
    terms: License
    period_start: date
    period_end: date
    used: int
    reserved: int
    overage: int
    projected: int
    revenue_12m: Decimal

    @property
    def cap(self) -> int | None:
        return self.terms.monthly_image_cap

    @property
    def remaining(self) -> int | None:
        return None if self.cap is None else max(0, self.cap - self.used - self.reserved)

    @property
    def fraction(self) -> float | None:
        return None if not self.cap else (self.used + self.reserved) / self.cap

    @property
    def state(self) -> State:
        if self.cap == 0:
            return "exhausted"
        return state_of(self.fraction, self.terms.warning_thresholds)

    @property
    def revenue_fraction(self) -> float | None:
        cap = self.terms.annual_revenue_cap_usd
        return None if not cap else float(self.revenue_12m / cap)

    @property
    def revenue_state(self) -> State:
        return state_of(self.revenue_fraction, self.terms.warning_thresholds)


async def statuses(session: AsyncSession, now: datetime) -> list[LicenseStatus]:
    revenue = await repo.revenue_since(session, now - timedelta(days=365))
    out = []
    for license_id in await repo.license_ids(session):
        terms = await repo.current_version(session, license_id, now)
        if terms is None:
            continue
        start, end, resets = window(terms, now)
        used, reserved, overage = await repo.window_totals(session, license_id, start, end)
        period_start = datetime.combine(start, datetime.min.time(), UTC)
        elapsed = max((now - period_start).total_seconds(), 1.0)
        total = (resets - period_start).total_seconds()
        projected = used if terms.cap_period == "rolling_30d" else round(used * total / elapsed)
        out.append(LicenseStatus(terms=terms, period_start=start, period_end=end, used=used, reserved=reserved,
                                 overage=overage, projected=projected, revenue_12m=revenue))
    return out


async def record_revenue(session: AsyncSession, *, amount_usd: Decimal, occurred_at: datetime, source: str,
                         reference: str | None, note: str | None, account_id: str | None) -> RevenueEntry:
    return await repo.add_revenue(session, RevenueEntry(amount_usd=amount_usd, occurred_at=occurred_at, source=source,
                                                        reference=reference, note=note, account_id=account_id))


# -- monthly audit report ----------------------------------------------------------------------


def parse_month(month: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest("month must be YYYY-MM.", code="invalid_month", param="month") from None
    return start, next_month(start.date())


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def build_report(session: AsyncSession, month: str) -> dict[str, Any]:
    """Per licence and model: images by plan kind, daily counts, peak day, cap, overage, fallbacks — from the ledger."""
    start, end = parse_month(month)
    per_license: dict[str, dict[str, Any]] = {}
    for row in await repo.ledger_month(session, start, end):
        lic = row.license or "(none)"
        entry = per_license.setdefault(lic, {"models": defaultdict(lambda: {"images": 0, "free_plan_images": 0,
                                                                            "paid_plan_images": 0,
                                                                            "overage_images": 0}),
                                             "daily": defaultdict(int)})
        m = entry["models"][row.model]
        images = int(row.images)
        m["images"] += images
        m["paid_plan_images" if row.plan_paid else "free_plan_images"] += images
        if row.license_overage:
            m["overage_images"] += images
        entry["daily"][str(row.day)] += images
    fallbacks = await repo.fallbacks_month(session, start, end)
    loras = await _lora_use(session, start, end)
    licenses = []
    for lic in sorted(set(per_license) | set(fallbacks) | set(loras) | set(await repo.license_ids(session))):
        entry = per_license.get(lic, {"models": {}, "daily": {}})
        terms = await repo.current_version(session, lic, end - timedelta(microseconds=1))
        models = [{"model": name, **vals} for name, vals in sorted(entry["models"].items())]
        daily = dict(sorted(entry["daily"].items()))
        peak = max(daily.items(), key=lambda kv: (kv[1], kv[0])) if daily else None
        licenses.append({
            "license": lic,
            "name": terms.name if terms else None,
            "terms_version": terms.version if terms else None,
            "cap": terms.monthly_image_cap if terms else None,
            "cap_period": terms.cap_period if terms else None,
            "images": sum(m["images"] for m in models),
            "free_plan_images": sum(m["free_plan_images"] for m in models),
            "paid_plan_images": sum(m["paid_plan_images"] for m in models),
            "overage_images": sum(m["overage_images"] for m in models),
            "fallbacks_taken": fallbacks.get(lic, 0),
            "daily": daily,
            "peak_day": {"day": peak[0], "images": peak[1]} if peak else None,
            "models": models,
            # Images made with a LoRA under this licence (also counted under their model's licence above).
            "loras": [{"lora": name, **vals} for name, vals in sorted(loras.get(lic, {}).items())],
        })
    return {"month": month, "licenses": licenses}


async def _lora_use(session: AsyncSession, start: datetime, end: datetime) -> dict[str, dict[str, dict[str, int]]]:
    """licence → LoRA → images, free- and paid-plan images, for the month."""
    use: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for row in await repo.lora_ledger_month(session, start, end):
        for lora in row.loras or ():
            lic = lora.get("license")
            if not lic:
                continue
            entry = use[str(lic)].setdefault(str(lora["name"]), {"images": 0, "free_plan_images": 0,
                                                                 "paid_plan_images": 0})
            entry["images"] += int(row.images)
            entry["paid_plan_images" if row.plan_paid else "free_plan_images"] += int(row.images)
    return use


async def report(session: AsyncSession, month: str, now: datetime) -> dict[str, Any]:
    """A closed month's report is frozen on first request and never recomputed; the open month is live."""
    start, end = parse_month(month)
    if start > now:
        raise InvalidRequest("That month has not started.", code="invalid_month", param="month")
    closed = end <= now
    if closed:
        frozen = await repo.frozen_report(session, month)
        if frozen is not None:
            return {**frozen.body, "frozen": True, "frozen_at": frozen.frozen_at.isoformat(),
                    "checksum": frozen.checksum}
    body = await build_report(session, month)
    checksum = _checksum(body)
    if not closed:
        return {**body, "frozen": False, "frozen_at": None, "checksum": checksum}
    stored = await repo.freeze_report(session, LicenseReport(month=month, body=body, checksum=checksum, frozen_at=now))
    return {**stored.body, "frozen": True, "frozen_at": stored.frozen_at.isoformat(), "checksum": stored.checksum}


async def frozen_reports(session: AsyncSession, *, limit: int = 24) -> list[LicenseReport]:
    """The months whose report is frozen (newest first): what an auditor can download as it was."""
    return list(await repo.frozen_reports(session, limit))


def report_csv(report: dict[str, Any]) -> str:
    """A report as GET /admin/licenses/report answers with ``Accept: text/csv``: one line per licence and model."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["month", "license", "model", "images", "free_plan_images", "paid_plan_images",
                     "overage_images", "cap", "fallbacks_taken", "peak_day", "peak_day_images", "checksum"])
    for lic in report["licenses"]:
        peak = lic["peak_day"] or {"day": "", "images": ""}
        for m in lic["models"] or [{"model": "", "images": 0, "free_plan_images": 0, "paid_plan_images": 0,
                                    "overage_images": 0}]:
            writer.writerow([report["month"], lic["license"], m["model"], m["images"], m["free_plan_images"],
                             m["paid_plan_images"], m["overage_images"], lic["cap"], lic["fallbacks_taken"],
                             peak["day"], peak["images"], report["checksum"]])
    return buf.getvalue()
