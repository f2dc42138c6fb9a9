"""Worker lifecycle: SIGTERM drains, the supervisor restarts a crashed child, a vanished caller cancels."""

from __future__ import annotations

import os
import signal
import time
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

SLOW = {"prompt": "a slow pony", "size": "512x512", "steps": 40}


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


@pytest.fixture
def deployment(pg_factory, demo_model_dir, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir)
    admin = bootstrap_admin(settings)
    env = service_env(url, tmp_path, demo_model_dir)
    api, base = spawn_api(env, tmp_path / "api.log")
    engine = create_engine(sync_url(url))
    procs = [api]
    yield env, base, admin, engine, procs, tmp_path
    stop_all(procs)
    engine.dispose()


def test_sigterm_finishes_the_running_job_and_claims_nothing_new(deployment) -> None:
    env, base, admin, engine, procs, tmp = deployment
    worker = spawn(["worker", "--device", "cpu"], env, tmp / "worker.log")
    procs.append(worker)
    with httpx.Client(base_url=base, timeout=60) as client:
        cust = new_customer(client, admin, plan="internal")
        running = client.post("/v1/generations", json=SLOW, headers=cust.headers).json()["id"]
        _wait(lambda: client.get(f"/v1/generations/{running}", headers=cust.headers).json()["status"] == "running",
              120, "job never started")
        waiting = client.post("/v1/generations", json=SLOW, headers=cust.headers).json()["id"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0
        [done] = wait_jobs_finished(client, cust.headers, [running], timeout=5)
        assert done["status"] == "succeeded"
        assert client.get(f"/v1/generations/{waiting}", headers=cust.headers).json()["status"] == "queued"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM workers")).scalar() == "stopped"


def _worker_id_of(pid: int) -> str:
    args = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    return args[args.index("--worker-id") + 1]


def test_supervisor_restarts_a_crashed_child_and_gives_back_its_job_at_once(deployment) -> None:
    env, base, admin, engine, procs, tmp = deployment
    # A lease far longer than the test: only the supervisor can bring the job back in time.
    supervisor = spawn(["worker", "--devices", "cpu,cpu"], {**env, "PONYSERVE_JOB_LEASE_SECONDS": "600"},
                       tmp / "supervisor.log")
    procs.append(supervisor)

    def ready_workers() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT id FROM workers WHERE state = 'ready' AND "
                                         "heartbeat_at > now() - interval '3 seconds'")).scalars())

    _wait(lambda: len(ready_workers()) == 2, 120, "two children never became ready")
    before = ready_workers()
    with httpx.Client(base_url=base, timeout=60) as client:
        cust = new_customer(client, admin, plan="internal")
        job_id = client.post("/v1/generations", json=SLOW, headers=cust.headers).json()["id"]

        def running_on() -> str | None:
            job = client.get(f"/v1/generations/{job_id}", headers=cust.headers).json()
            if job["status"] != "running":
                return None
            with engine.connect() as conn:
                return conn.execute(text("SELECT worker_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar()

        _wait(lambda: running_on() is not None, 120, "job never started")
        victim_id = running_on()
        [victim] = [pid for pid in _children(supervisor.pid) if _worker_id_of(pid) == victim_id]
        os.kill(victim, signal.SIGKILL)
        [done] = wait_jobs_finished(client, cust.headers, [job_id], timeout=180)
    assert done["status"] == "succeeded"
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT attempts FROM jobs WHERE id = :j"), {"j": job_id}).scalar()
        charged = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"), {"j": job_id}).scalar()
        victim_state = conn.execute(text("SELECT state FROM workers WHERE id = :w"), {"w": victim_id}).scalar()
    assert (attempts, charged) == (2, 1)
    assert victim_state == "failed"
    _wait(lambda: len(ready_workers()) == 2 and ready_workers() != before, 120, "the child was not restarted")
    assert victim not in _children(supervisor.pid)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0


def test_a_synchronous_caller_that_disconnects_cancels_its_job(client, make_customer, pg_engine) -> None:
    cust = make_customer(plan="internal")
    try:
        client.post("/v1/images/generations", json={**SLOW, "steps": 60}, headers=cust.headers, timeout=1.5)
    except httpx.ReadTimeout:
        pass
    else:
        raise AssertionError("the request should still have been running")

    def status() -> str | None:
        with pg_engine.connect() as conn:
            return conn.execute(text("SELECT status FROM jobs WHERE account_id = :a"),
                                {"a": cust.account_id}).scalar()

    _wait(lambda: status() == "cancelled", 60, "the abandoned job was not cancelled")
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM usage_ledger WHERE account_id = :a"),
                            {"a": cust.account_id}).scalar() == 0
