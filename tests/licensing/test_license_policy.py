"""Who may use a licensed model, what happens at its cap, and what /v1/models tells callers."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from harness import new_customer, wait_jobs_finished
from sqlalchemy import create_engine, text

from app.config import LicenseSpec
from app.db import Database, sync_url
from app.errors import PermissionDenied
from app.kit.ids import new_id
from app.licensing import service as licensing
from app.queue.models import Job

BODY = {"prompt": "a pony", "steps": 1}


def _admin(licensed) -> dict[str, str]:
    return {"Authorization": f"Bearer {licensed[1]}"}


def _paid_plan(lclient, licensed) -> None:
    lclient.post("/admin/plans", headers=_admin(licensed), json={"code": "paid", "name": "Paid", "is_paid": True})


def test_paid_plan_refused_on_a_non_commercial_model_and_free_plan_served(lclient, licensed) -> None:
    _paid_plan(lclient, licensed)
    paid = new_customer(lclient, licensed[1], plan="paid")
    free = new_customer(lclient, licensed[1], plan="free")
    r = lclient.post("/v1/generations", json={**BODY, "model": "nc"}, headers=paid.headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "license_forbids_plan"
    assert lclient.post("/v1/generations", json={**BODY, "model": "nc"}, headers=free.headers).status_code == 202
    listed = {m["id"] for m in lclient.get("/v1/models", headers=paid.headers).json()["data"]}
    assert "nc" not in listed and "open" in listed


def test_models_list_shows_licence_terms(lclient, licensed) -> None:
    cust = new_customer(lclient, licensed[1])
    models = {m["id"]: m for m in lclient.get("/v1/models", headers=cust.headers).json()["data"]}
    assert models["open"]["license_terms"]["url"] == "https://example.org/open-license"
    assert models["capped-fb"]["license_terms"] == {**models["capped-fb"]["license_terms"], "monthly_image_cap": 2,
                                                    "at_cap": "fallback", "fallback_model": "open"}


def test_fallback_serves_the_fallback_model_and_meters_its_licence(lclient, licensed, pg_engine_for) -> None:
    cust = new_customer(lclient, licensed[1], plan="internal")
    ids = [lclient.post("/v1/generations", json={**BODY, "model": "capped-fb"}, headers=cust.headers).json()["id"]
           for _ in range(3)]
    jobs = wait_jobs_finished(lclient, cust.headers, ids)
    assert [j["parameters"]["model"] for j in jobs] == ["capped-fb", "capped-fb", "open"]
    assert jobs[2]["parameters"]["revised_prompt"].startswith("open, ")
    engine = pg_engine_for(licensed)
    with engine.connect() as conn:
        ledger = dict(conn.execute(text("SELECT job_id, license FROM usage_ledger WHERE job_id = ANY(:ids)"),
                                   {"ids": ids}).all())
    assert [ledger[i] for i in ids] == ["capfb", "capfb", "open"]
    status = {s["license"]["id"]: s for s in lclient.get("/admin/licenses", headers=_admin(licensed)).json()}
    assert (status["capfb"]["used"], status["capfb"]["state"]) == (2, "exhausted")
    report = lclient.get("/admin/licenses/report", params={"month": datetime.now(UTC).strftime("%Y-%m")},
                         headers=_admin(licensed)).json()
    assert {lic["license"]: lic["fallbacks_taken"] for lic in report["licenses"]}["capfb"] == 1


def test_allow_overage_serves_and_records_the_overage(lclient, licensed) -> None:
    cust = new_customer(lclient, licensed[1], plan="internal")
    ids = [lclient.post("/v1/generations", json={**BODY, "model": "over"}, headers=cust.headers).json()["id"]
           for _ in range(3)]
    assert {j["status"] for j in wait_jobs_finished(lclient, cust.headers, ids)} == {"succeeded"}
    status = {s["license"]["id"]: s for s in lclient.get("/admin/licenses", headers=_admin(licensed)).json()}
    assert (status["overage"]["used"], status["overage"]["overage"]) == (3, 2)


def _job(license_id: str, n: int, at: datetime) -> Job:
    return Job(id=new_id("gen"), license=license_id, n=n, model="m", quota_day=at.date(),
               quota_month=at.date().replace(day=1))


async def _month_boundary(url: str) -> None:
    db = Database(url, pool_size=1)
    try:
        async with db.unit_of_work() as s:
            await licensing.add_version(s, LicenseSpec(id="tiny", name="Tiny", monthly_image_cap=2),
                                        datetime(2025, 1, 1, tzinfo=UTC))
        last = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
        async with db.unit_of_work() as s:
            terms = await licensing.terms_for(s, "tiny", last)
            assert (await licensing.reserve(s, _job("tiny", 2, last), terms, last)).outcome == "reserved"
        with pytest.raises(PermissionDenied) as refused:
            async with db.unit_of_work() as s:
                await licensing.reserve(s, _job("tiny", 1, last), terms, last)
        assert refused.value.code == "license_cap_reached"
        first = datetime(2026, 2, 1, tzinfo=UTC)
        async with db.unit_of_work() as s:
            assert (await licensing.reserve(s, _job("tiny", 2, first), terms, first)).outcome == "reserved"
            start, end, _ = licensing.window(terms, first)
            assert (start, end) == (date(2026, 2, 1), date(2026, 2, 28))
    finally:
        await db.dispose()


def test_licence_counter_rolls_over_at_the_month_boundary(pg_factory) -> None:
    asyncio.run(_month_boundary(pg_factory()))


@pytest.fixture(scope="module")
def pg_engine_for():
    engines = []

    def make(licensed):
        engine = create_engine(sync_url(licensed[0].settings.database_url))
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.dispose()
