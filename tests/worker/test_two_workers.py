"""Two `ponyserve worker` processes against one Postgres never run the same job."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from harness import (
    bootstrap_admin,
    make_settings,
    new_customer,
    service_env,
    spawn,
    start_server,
    stop_all,
    wait_jobs_finished,
)
from sqlalchemy import create_engine, text

from app.db import sync_url


def test_two_worker_processes_share_the_queue_without_overlap(pg_factory, demo_model_dir, tmp_path: Path) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir)
    server = start_server(settings, embedded_worker=False)
    env = service_env(url, tmp_path, demo_model_dir, PONYSERVE_MAX_BATCH_IMAGES="1")
    workers = [spawn(["worker", "--device", "cpu"], env, tmp_path / f"worker{i}.log") for i in range(2)]
    engine = create_engine(sync_url(url))
    try:
        deadline = time.monotonic() + 90
        while True:
            with engine.connect() as conn:
                ready = conn.execute(text("SELECT count(*) FROM workers WHERE state = 'ready'")).scalar()
            if ready == 2:
                break
            assert time.monotonic() < deadline, "workers did not come up"
            assert all(w.poll() is None for w in workers), [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
            time.sleep(0.2)

        with httpx.Client(base_url=server.url, timeout=60) as client:
            cust = new_customer(client, bootstrap_admin(settings), plan="internal")
            ids = []
            for i in range(16):
                r = client.post("/v1/generations", headers=cust.headers,
                                json={"prompt": f"pony {i}", "size": "64x64", "steps": 4, "n": 1 + i % 2})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            jobs = wait_jobs_finished(client, cust.headers, ids, timeout=300)
        assert {j["status"] for j in jobs} == {"succeeded"}
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, n, attempts, worker_id FROM jobs")).all()
            ledger = dict(conn.execute(text("SELECT job_id, count(*) FROM usage_ledger GROUP BY job_id")).all())
        assert all(j.attempts == 1 for j in rows), "a job was claimed twice"
        assert {j.id: j.n for j in rows} == ledger, "ledger rows differ from images generated"
        assert len({j.worker_id for j in rows}) == 2, "both workers should have taken jobs"
    finally:
        stop_all(workers)
        server.stop()
        engine.dispose()
