"""Two `ponyserve worker` processes against one Postgres never run the same job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from harness import make_settings, new_customer, start_server
from sqlalchemy import create_engine, text

from app.db import sync_url


def _spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Logs go to a file: an unread pipe fills up and blocks the worker mid-job.
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--device", "cpu"], env=env,
                                stdout=sink, stderr=subprocess.STDOUT)


def test_two_worker_processes_share_the_queue_without_overlap(pg_factory, demo_model_dir, tmp_path: Path) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir)
    server = start_server(settings, embedded_worker=False)
    env = {**os.environ, "PONYSERVE_DATABASE_URL": url, "PONYSERVE_DATA_DIR": str(tmp_path),
           "PONYSERVE_DEMO_MODEL_PATH": str(demo_model_dir), "PONYSERVE_MAX_BATCH_IMAGES": "1",
           "PONYSERVE_HEARTBEAT_SECONDS": "0.5", "PONYSERVE_LOG_JSON": "false",
           # Two workers on a small CI machine: one thread each, or they fight over the cores.
           "OMP_NUM_THREADS": "1"}
    workers = [_spawn_worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
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
            import asyncio

            from app.cli import _bootstrap

            admin = asyncio.run(_bootstrap(settings))
            assert admin
            cust = new_customer(client, admin)
            ids = []
            for i in range(16):
                r = client.post("/v1/generations", headers=cust.headers,
                                json={"prompt": f"pony {i}", "size": "64x64", "steps": 4, "n": 1 + i % 2})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            deadline = time.monotonic() + float(os.environ.get("TWO_WORKERS_DEADLINE", 300))
            while True:
                statuses = [client.get(f"/v1/generations/{j}", headers=cust.headers).json()["status"] for j in ids]
                if all(s in ("succeeded", "failed", "cancelled") for s in statuses):
                    break
                assert time.monotonic() < deadline, statuses
                time.sleep(0.3)
        assert set(statuses) == {"succeeded"}
        with engine.connect() as conn:
            jobs = conn.execute(text("SELECT id, n, attempts, worker_id FROM jobs")).all()
            ledger = dict(conn.execute(text("SELECT job_id, count(*) FROM usage_ledger GROUP BY job_id")).all())
        assert all(j.attempts == 1 for j in jobs), "a job was claimed twice"
        assert {j.id: j.n for j in jobs} == ledger, "ledger rows differ from images generated"
        assert len({j.worker_id for j in jobs}) == 2, "both workers should have taken jobs"
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        server.stop()
        engine.dispose()
