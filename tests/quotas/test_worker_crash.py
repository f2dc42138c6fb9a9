"""A worker killed mid-job: the job is retried once and charged once; no reservation is left stuck."""

from __future__ import annotations

import signal
import time
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
from sqlalchemy import create_engine, text

from app.db import sync_url


def test_killed_worker_job_is_retried_once_and_charged_once(pg_factory, demo_model_dir, tmp_path: Path) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir)
    env = service_env(url, tmp_path, demo_model_dir, PONYSERVE_JOB_LEASE_SECONDS="3")
    engine = create_engine(sync_url(url))
    procs = []
    try:
        admin = bootstrap_admin(settings)
        api, base = spawn_api(env, tmp_path / "api.log")
        procs.append(api)
        with httpx.Client(base_url=base, timeout=60) as client:
            cust = new_customer(client, admin, plan="internal")
            doomed = spawn(["worker", "--device", "cpu"], env, tmp_path / "doomed.log")
            procs.append(doomed)
            job_id = client.post("/v1/generations", headers=cust.headers,
                                 json={"prompt": "slow pony", "size": "512x512", "steps": 60, "n": 2}).json()["id"]
            deadline = time.monotonic() + 120
            while client.get(f"/v1/generations/{job_id}", headers=cust.headers).json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()

            procs.append(spawn(["worker", "--device", "cpu"], env, tmp_path / "rescuer.log"))
            [job] = wait_jobs_finished(client, cust.headers, [job_id], timeout=240)
            assert job["status"] == "succeeded"
            usage = client.get("/v1/usage", headers=cust.headers).json()["account"]["day"]
        assert (usage["used"], usage["reserved"]) == (2, 0)
        with engine.connect() as conn:
            attempts = conn.execute(text("SELECT attempts FROM jobs WHERE id = :j"), {"j": job_id}).scalar()
            charged = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"), {"j": job_id}).scalar()
        assert attempts == 2
        assert charged == 2

        # A job whose retries are used up is failed by the sweeper and its reservation released.
        with httpx.Client(base_url=base, timeout=60) as client:
            stop_all(procs[2:])
            lost = client.post("/v1/generations", headers=cust.headers,
                               json={"prompt": "lost pony", "size": "64x64", "steps": 1}).json()["id"]
            with engine.begin() as conn:
                conn.execute(text("UPDATE jobs SET status = 'running', attempts = 2, worker_id = 'ghost', "
                                  "lease_expires_at = now() - interval '1 minute' WHERE id = :j"), {"j": lost})
            procs.append(spawn(["worker", "--device", "cpu"], env, tmp_path / "sweeper.log"))
            [job] = wait_jobs_finished(client, cust.headers, [lost], timeout=120)
            assert job["status"] == "failed"
            assert job["error"]["code"] == "worker_lost"
            usage = client.get("/v1/usage", headers=cust.headers).json()["account"]["day"]
        assert (usage["used"], usage["reserved"]) == (2, 0)
    finally:
        stop_all(procs)
        engine.dispose()
