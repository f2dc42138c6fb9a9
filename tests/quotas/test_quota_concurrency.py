"""Quotas are exact under concurrency: 200 simultaneous requests through two API processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from harness import (
    bootstrap_admin,
    make_settings,
    new_customer,
    service_env,
    spawn,
    spawn_api,
    stop_all,
    wait_jobs_finished,
)
from sqlalchemy import create_engine, text

from app.db import sync_url

QUOTA = 50


async def _fire(urls: list[str], headers: dict[str, str], n: int, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        body = {"prompt": "a pony", "size": "64x64", "steps": 1, "n": n}
        return list(await asyncio.gather(*[
            client.post(f"{urls[i % len(urls)]}/v1/generations", json=body, headers=headers) for i in range(count)
        ]))


@pytest.mark.parametrize("n", [1, 3])
def test_200_concurrent_requests_against_a_quota_of_50(pg_factory, demo_model_dir, tmp_path: Path, n: int) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir)
    env = service_env(url, tmp_path, demo_model_dir)
    procs = []
    engine = create_engine(sync_url(url))
    try:
        # Before the API starts: `ponyserve serve` would otherwise take (and print) the one bootstrap key.
        admin = {"Authorization": f"Bearer {bootstrap_admin(settings)}"}
        (api1, url1), (api2, url2) = spawn_api(env, tmp_path / "api1.log"), spawn_api(env, tmp_path / "api2.log")
        procs += [api1, api2]
        with httpx.Client(base_url=url1, timeout=60) as client:
            plan = client.post("/admin/plans", headers=admin, json={
                "code": "quota50", "name": "Quota 50", "monthly_image_quota": QUOTA, "max_n": 4})
            assert plan.status_code == 201, plan.text
            cust = new_customer(client, admin["Authorization"].split()[1], plan="quota50")

            responses = asyncio.run(_fire([url1, url2], cust.headers, n, 200))
            statuses = [r.status_code for r in responses]
            accepted = [r.json()["id"] for r in responses if r.status_code == 202]
            refused = [r.json()["error"] for r in responses if r.status_code == 402]
            assert len(accepted) == QUOTA // n, statuses
            assert len(refused) == 200 - QUOTA // n
            assert {e["code"] for e in refused} == {"monthly_quota_exceeded"}
            assert {e["limit"] for e in refused} == {QUOTA}

            procs.append(spawn(["worker", "--device", "cpu"], env, tmp_path / "worker.log"))
            jobs = wait_jobs_finished(client, cust.headers, accepted)
            assert {j["status"] for j in jobs} == {"succeeded"}
            usage = client.get("/v1/usage", headers=cust.headers).json()

        images = (QUOTA // n) * n
        assert usage["account"]["month"] == {**usage["account"]["month"], "used": images, "reserved": 0,
                                             "limit": QUOTA, "remaining": QUOTA - images}
        with engine.connect() as conn:
            ledger = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE account_id = :a"),
                                  {"a": cust.account_id}).scalar()
            rollup = conn.execute(text("SELECT sum(images) FROM usage_daily WHERE account_id = :a"),
                                  {"a": cust.account_id}).scalar()
            jobs_in_db = conn.execute(text("SELECT count(*) FROM jobs WHERE account_id = :a"),
                                      {"a": cust.account_id}).scalar()
        assert ledger == rollup == images
        assert jobs_in_db == QUOTA // n, "a refused request must not leave a job behind"
    finally:
        stop_all(procs)
        engine.dispose()
