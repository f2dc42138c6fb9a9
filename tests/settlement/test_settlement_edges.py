"""Settlement at its edges: a job that crosses month end counts in its reservation's period
everywhere; an idempotency key never yields two jobs; a synchronous caller told "cancelled and
not charged" is never charged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from harness import bootstrap_admin, make_settings, new_customer, start_server, wait_jobs_finished
from lifecycle_harness import ThreadWorker, check_invariants
from sqlalchemy import Engine, create_engine, text

from app.db import sync_url
from app.quotas.periods import month_start


@pytest.fixture
def bare(pg_factory, demo_model_dir: Path, tmp_path: Path) -> Iterator[tuple[object, Engine, httpx.Client, str]]:
    """An API without a worker on a fresh database, so a test decides when jobs run."""
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir)
    server = start_server(settings, embedded_worker=False)
    engine = create_engine(sync_url(url))
    client = httpx.Client(base_url=server.url, timeout=60)
    try:
        yield settings, engine, client, bootstrap_admin(settings)
    finally:
        client.close()
        server.stop()
        engine.dispose()


def _move_reservation_to(engine: Engine, job_id: str, day: date) -> None:
    """As if the job had been accepted on ``day``: its reservation and its counters' period move there."""
    month = day.replace(day=1)
    with engine.begin() as conn:
        today = conn.execute(text("SELECT quota_day, quota_month FROM jobs WHERE id = :j"), {"j": job_id}).one()
        conn.execute(text("UPDATE jobs SET quota_day = :d, quota_month = :m WHERE id = :j"),
                     {"d": day, "m": month, "j": job_id})
        conn.execute(text("UPDATE quota_counters SET period_start = :d WHERE period = 'day' AND period_start = :t"),
                     {"d": day, "t": today.quota_day})
        conn.execute(text("UPDATE quota_counters SET period_start = :m WHERE period = 'month' AND period_start = :t"),
                     {"m": month, "t": today.quota_month})
        conn.execute(text("UPDATE license_usage_daily SET day = :d WHERE day = :t"), {"d": day, "t": today.quota_day})


def test_a_job_accepted_before_month_end_counts_in_that_month_everywhere(bare) -> None:
    settings, engine, client, admin = bare
    cust = new_customer(client, admin, plan="internal")
    job = client.post("/v1/generations", json={"prompt": "a pony", "size": "64x64", "steps": 2, "n": 2},
                      headers=cust.headers).json()["id"]
    last_month_end = month_start(datetime.now(UTC)) - timedelta(days=1)
    _move_reservation_to(engine, job, last_month_end)
    worker = ThreadWorker(settings)
    try:
        [finished] = wait_jobs_finished(client, cust.headers, [job], timeout=60)
    finally:
        worker.stop()
    assert finished["status"] == "succeeded"
    with engine.connect() as conn:
        days = conn.execute(text("SELECT DISTINCT usage_day FROM usage_ledger WHERE job_id = :j"), {"j": job}).all()
        counters = dict(conn.execute(text(
            "SELECT period_start, used FROM quota_counters WHERE scope = 'account' AND period = 'month'")).all())
        licence = dict(conn.execute(text("SELECT day, used FROM license_usage_daily")).all())
    # Delivered this month, counted last month: ledger, quota counters and licence agree.
    assert days == [(last_month_end,)]
    assert counters == {last_month_end.replace(day=1): 2}
    assert licence == {last_month_end: 2}
    auth = {"Authorization": f"Bearer {admin}"}
    previous = client.get("/admin/licenses/report", params={"month": last_month_end.strftime("%Y-%m")},
                          headers=auth).json()
    current = client.get("/admin/licenses/report", params={"month": datetime.now(UTC).strftime("%Y-%m")},
                         headers=auth).json()
    assert {lic["license"]: lic["images"] for lic in previous["licenses"]} == {"demo": 2}
    assert {lic["license"]: lic["images"] for lic in current["licenses"]} == {"demo": 0}
    check_invariants(engine)


def test_an_idempotency_key_never_yields_two_jobs_even_when_its_claim_is_taken_over(bare) -> None:
    """A retry may take over a claim stuck in "accepting" (its request looked dead); if the first
    request had in fact created its job, the database's one-job-per-key rule turns the retry into
    a replay of that job."""
    _, engine, client, admin = bare
    cust = new_customer(client, admin, plan="internal")
    headers = {**cust.headers, "Idempotency-Key": "order-77"}
    body = {"prompt": "a pony", "size": "64x64", "steps": 2}
    first = client.post("/v1/generations", json=body, headers=headers)
    assert first.status_code == 202, first.text
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET state = 'accepting', job_id = NULL, "
                          "created_at = now() - interval '5 minutes' WHERE key = 'order-77'"))
    retry = client.post("/v1/generations", json=body, headers=headers)
    assert retry.status_code == 202, retry.text
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    again = client.post("/v1/generations", json=body, headers=headers)
    assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE idempotency_key = 'order-77'")).scalar_one()
        record = conn.execute(text("SELECT state, job_id FROM idempotency_keys WHERE key = 'order-77'")).one()
    assert tuple(record) == ("accepted", first.json()["id"])
    with engine.connect() as conn:
        reserved = conn.execute(text("SELECT sum(reserved) FROM quota_counters WHERE scope = 'account'")).scalar()
    assert jobs == 1
    assert reserved == 2  # day and month counters, one image each: the retry reserved nothing


@pytest.mark.parametrize("route", ["/v1/images/generations", "/sdapi/v1/txt2img"])
def test_a_synchronous_request_that_times_out_is_cancelled_and_never_charged(
    pg_factory, demo_model_dir: Path, tmp_path: Path, route: str,
) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir, max_wait_seconds=1.0)
    server = start_server(settings)
    engine = create_engine(sync_url(url))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cust = new_customer(client, bootstrap_admin(settings), plan="internal")
            body = ({"prompt": "a slow pony", "size": "512x512", "steps": 50} if route.startswith("/v1") else
                    {"prompt": "a slow pony", "width": 512, "height": 512, "steps": 50})
            r = client.post(route, json=body, headers=cust.headers)
            assert r.status_code == 504, r.text
            assert "cancelled and not charged" in r.json()["error"]["message"]
            with engine.connect() as conn:
                job_id, status = conn.execute(text("SELECT id, status FROM jobs")).one()
            # It was settled as cancelled before the answer left; the worker finishing later changes nothing.
            assert status == "cancelled"
            # Let the worker notice (it stops at its next step) and go idle again.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    busy = conn.execute(text("SELECT count(*) FROM workers WHERE state = 'busy'")).scalar_one()
                if not busy:
                    break
                time.sleep(0.2)
            [job] = wait_jobs_finished(client, cust.headers, [job_id])
            assert job["status"] == "cancelled" and job["usage"]["images"] == 0
            usage = client.get("/v1/usage", headers=cust.headers).json()["account"]["day"]
            assert (usage["used"], usage["reserved"]) == (0, 0)
        check_invariants(engine)
    finally:
        server.stop()
        engine.dispose()
