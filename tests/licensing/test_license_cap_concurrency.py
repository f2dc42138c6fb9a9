"""A licence cap holds under concurrency: 100 requests through two API processes, cap 30."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
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
from licensed_models import write_models_file
from sqlalchemy import create_engine, text

from app.db import sync_url


async def _fire(urls: list[str], headers: dict[str, str], count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as client:
        return list(await asyncio.gather(*[
            client.post(f"{urls[i % 2]}/v1/generations", json={"prompt": "a pony", "model": "capped"},
                        headers=headers) for i in range(count)
        ]))


def test_cap_30_with_100_concurrent_requests_on_two_replicas(pg_factory, demo_model_dir, tmp_path: Path) -> None:
    url = pg_factory()
    models = write_models_file(tmp_path, demo_model_dir)
    settings = make_settings(url, tmp_path, demo_model_dir, models_file=models)
    env = service_env(url, tmp_path, demo_model_dir, PONYSERVE_MODELS_FILE=str(models))
    admin = bootstrap_admin(settings)
    procs = []
    engine = create_engine(sync_url(url))
    try:
        (a1, u1), (a2, u2) = spawn_api(env, tmp_path / "api1.log"), spawn_api(env, tmp_path / "api2.log")
        procs += [a1, a2]
        with httpx.Client(base_url=u1, timeout=60) as client:
            cust = new_customer(client, admin, plan="internal")
            responses = asyncio.run(_fire([u1, u2], cust.headers, 100))
            accepted = [r.json()["id"] for r in responses if r.status_code == 202]
            refused = [r.json()["error"]["code"] for r in responses if r.status_code == 403]
            assert len(accepted) == 30, [r.status_code for r in responses]
            assert refused == ["license_cap_reached"] * 70
            procs.append(spawn(["worker", "--device", "cpu"], env, tmp_path / "worker.log"))
            jobs = wait_jobs_finished(client, cust.headers, accepted)
            assert {j["status"] for j in jobs} == {"succeeded"}
            status = {s["license"]["id"]: s for s in client.get(
                "/admin/licenses", headers={"Authorization": f"Bearer {admin}"}).json()}
        assert (status["cap30"]["used"], status["cap30"]["reserved"], status["cap30"]["state"]) == (30, 0, "exhausted")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM usage_ledger WHERE license = 'cap30'")).scalar() == 30
    finally:
        stop_all(procs)
        engine.dispose()
