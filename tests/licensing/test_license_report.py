"""Monthly licence reports equal the ledger, and a closed month's report is frozen."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from harness import new_customer, wait_jobs_finished
from sqlalchemy import create_engine, text

from app.db import sync_url

LEDGER_TOTALS = """SELECT license, count(*) FROM usage_ledger
                   WHERE usage_day >= :start AND usage_day < :end GROUP BY license"""


def _insert_past_images(engine, count: int, month_day: str) -> None:
    """Ledger rows for a past month, as if generated then (the application never writes the past)."""
    with engine.begin() as conn:
        template = conn.execute(text("SELECT * FROM usage_ledger ORDER BY id LIMIT 1")).mappings().one()
        job = conn.execute(text("SELECT * FROM jobs WHERE id = :j"), {"j": template["job_id"]}).mappings().one()
        for i in range(count):
            suffix = f"{month_day.replace('-', '')}{i}{datetime.now().microsecond}"
            conn.execute(text(
                "INSERT INTO job_outputs (id, job_id, index, seed, format, width, height, storage_key, size_bytes, "
                "sha256, created_at) SELECT :img, job_id, index, seed, format, width, height, storage_key, "
                "size_bytes, sha256, created_at FROM job_outputs WHERE id = :tmpl"),
                {"img": f"img_past{suffix}", "tmpl": template["image_id"]})
            conn.execute(text(
                "INSERT INTO usage_ledger (job_id, image_id, api_key_id, account_id, model, license, images, width, "
                "height, steps, megapixel_steps, gpu_seconds, price_units, plan_code, plan_paid, license_overage, "
                "usage_day, created_at) VALUES (:job, :img, :key, :acct, 'open', 'open', 1, 64, 64, 1, 0.004, 0.1, 1, "
                "'free', false, false, :day, :at)"),
                {"job": job["id"], "img": f"img_past{suffix}", "key": template["api_key_id"],
                 "acct": template["account_id"], "day": month_day, "at": f"{month_day}T12:00:00+00:00"})


def test_reports_equal_the_ledger_and_closed_months_are_frozen(lclient, licensed) -> None:
    server, admin_key = licensed
    admin = {"Authorization": f"Bearer {admin_key}"}
    cust = new_customer(lclient, admin_key, plan="internal")
    ids = [lclient.post("/v1/generations", json={"prompt": "a pony", "model": m, "steps": 1, "n": 2},
                        headers=cust.headers).json()["id"] for m in ("open", "capped")]
    wait_jobs_finished(lclient, cust.headers, ids)
    engine = create_engine(sync_url(server.settings.database_url))
    try:
        now = datetime.now(UTC)
        month = now.strftime("%Y-%m")
        live = lclient.get("/admin/licenses/report", params={"month": month}, headers=admin).json()
        assert live["frozen"] is False
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
        end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
        with engine.connect() as conn:
            ledger = dict(conn.execute(text(LEDGER_TOTALS), {"start": start, "end": end}).all())
        assert {lic["license"]: lic["images"] for lic in live["licenses"] if lic["images"]} == ledger
        open_lic = next(lic for lic in live["licenses"] if lic["license"] == "open")
        assert open_lic["images"] == open_lic["free_plan_images"] + open_lic["paid_plan_images"]
        assert sum(open_lic["daily"].values()) == open_lic["images"]

        _insert_past_images(engine, 3, "2026-10-07")
        closed = lclient.get("/admin/licenses/report", params={"month": "2026-10"}, headers=admin).json()
        assert closed["frozen"] is True
        assert {lic["license"]: lic["images"] for lic in closed["licenses"] if lic["images"]} == {"open": 3}
        october = next(lic for lic in closed["licenses"] if lic["license"] == "open")
        assert october["peak_day"] == {"day": "2026-10-07", "images": 3}

        _insert_past_images(engine, 5, "2026-10-08")
        again = lclient.get("/admin/licenses/report", params={"month": "2026-10"}, headers=admin).json()
        assert again == closed, "a frozen report never changes"
        csv_report = lclient.get("/admin/licenses/report", params={"month": "2026-10"},
                                 headers={**admin, "Accept": "text/csv"})
        assert csv_report.headers["content-type"].startswith("text/csv")
        assert closed["checksum"] in csv_report.text
        assert lclient.get("/admin/licenses/report", params={"month": "2026-13"}, headers=admin).status_code == 400
    finally:
        engine.dispose()


def test_revenue_entries_feed_the_revenue_cap_state(lclient, licensed) -> None:
    admin = {"Authorization": f"Bearer {licensed[1]}"}
    r = lclient.post("/admin/licenses", headers=admin, json={"id": "rev", "name": "Revenue capped",
                                                              "annual_revenue_cap_usd": 1000})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    for _ in range(2):  # the same reference is recorded once
        assert lclient.post("/admin/revenue", headers=admin, json={"amount_usd": "850.00", "reference": "in_1"}
                            ).status_code == 201
    status = {s["license"]["id"]: s for s in lclient.get("/admin/licenses", headers=admin).json()}
    assert status["rev"]["revenue"]["trailing_12m_usd"] == "850.00"
    assert status["rev"]["revenue"]["state"] == "warning"
    # The gauges are refreshed in the background (a scrape does no database work); every test
    # server in this process refreshes the same process-wide gauges, so wait for this one's.
    deadline = time.monotonic() + 10
    while 'ponyserve_license_revenue_ratio{license="rev"}' not in (metrics := lclient.get("/metrics").text):
        assert time.monotonic() < deadline, "licence gauges never refreshed"
        time.sleep(0.05)
    assert 'ponyserve_license_state{license="rev",state="ok"} 1.0' in metrics
    assert 'ponyserve_license_revenue_ratio{license="rev"} 0.85' in metrics
