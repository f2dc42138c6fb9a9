"""Every job ends exactly once, whatever fails: a database error or a crash at each step of the
lifecycle, a cancel at each phase, and seeded random mixes of both — on Postgres, through the
real API and a worker with its own engine and event loop.

After every scenario: every job is terminal within its lease plus a sweep, nothing is still
reserved, an account's used images are the images of its succeeded jobs, the ledger and the
licence count exactly the delivered images, paid plans' ledger rows each have one billing-outbox
row, and cancelled or failed jobs have no images and no ledger rows.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from harness import Customer, LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from lifecycle_harness import POINTS, Faults, ThreadWorker, check_invariants, wait_all_terminal
from sqlalchemy import Engine, create_engine, text

from app.config import Settings
from app.db import sync_url
from app.worker import worker as worker_module

LEASE_SECONDS = 2.0
SWEEP_SECONDS = 1.0
# Lease + sweep, plus the time a fresh worker takes to start and run a retried job on this machine.
SETTLE_TIMEOUT = LEASE_SECONDS + SWEEP_SECONDS + 30
JOB = {"prompt": "a pony in a meadow", "size": "128x128", "steps": 10}
# A job that runs for a few progress ticks.
SLOW = {"size": "256x256", "steps": 40}


@dataclass
class Env:
    server: LiveServer
    settings: Settings
    engine: Engine
    client: httpx.Client
    free: Customer
    paid: Customer

    def submit(self, customer: Customer, **extra: object) -> str:
        r = self.client.post("/v1/generations", json={**JOB, **extra}, headers=customer.headers)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def submit_batch(self, **extra: object) -> list[str]:
        return [self.submit(self.free, seed=1, **extra), self.submit(self.paid, n=2, seed=2, **extra),
                self.submit(self.free, seed=3, **extra)]

    def cancel(self, customer: Customer, job_id: str) -> httpx.Response:
        with httpx.Client(base_url=self.server.url, timeout=30) as c:
            return c.post(f"/v1/generations/{job_id}/cancel", headers=customer.headers)

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status FROM jobs WHERE id = ANY(:ids)"), {"ids": job_ids}).all()
        return dict(rows)


@pytest.fixture(scope="module")
def env(pg_factory, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    url = pg_factory()
    settings = make_settings(url, tmp_path_factory.mktemp("lifecycle"), demo_model_dir,
                             job_lease_seconds=LEASE_SECONDS)
    # The API alone: each scenario runs its own worker(s), which it may crash.
    server = start_server(settings, embedded_worker=False)
    engine = create_engine(sync_url(url))
    admin = bootstrap_admin(settings)
    client = httpx.Client(base_url=server.url, timeout=60)
    plan = client.post("/admin/plans", headers={"Authorization": f"Bearer {admin}"},
                       json={"code": "paid-lifecycle", "name": "Paid", "is_paid": True})
    assert plan.status_code == 201, plan.text
    # No rate limit on either plan: the scenarios submit faster than a free plan allows.
    free, paid = new_customer(client, admin, plan="internal"), new_customer(client, admin, plan="paid-lifecycle")
    with engine.begin() as conn:
        # Linked to Stripe, so its images get billing-outbox rows (nothing is sent: Stripe is not configured).
        conn.execute(text("UPDATE accounts SET stripe_customer_id = 'cus_lifecycle', stripe_linked_at = now() "
                          "WHERE id = :a"), {"a": paid.account_id})
    try:
        yield Env(server, settings, engine, client, free, paid)
    finally:
        client.close()
        server.stop()
        engine.dispose()


@pytest.fixture(autouse=True)
def quick_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "SWEEP_INTERVAL_SECONDS", SWEEP_SECONDS)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults(monkeypatch)


def _attempts(env: Env, job_ids: list[str]) -> dict[str, int]:
    with env.engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, attempts FROM jobs WHERE id = ANY(:ids)"), {"ids": job_ids}).all())


@pytest.mark.parametrize("kind", ["db", "crash"])
@pytest.mark.parametrize("point", list(POINTS))
def test_a_fault_at_any_step_is_recovered_and_every_job_is_delivered_and_charged_once(
    env: Env, faults: Faults, point: str, kind: str,
) -> None:
    workers: list[ThreadWorker] = []
    try:
        if point != "heartbeat":
            faults.arm(point, kind)
        workers.append(ThreadWorker(env.settings))
        if point == "heartbeat":
            # A heartbeat of the running worker, not its first one at start-up.
            time.sleep(0.6)
            faults.arm(point, kind)
        # Long enough for progress ticks when those are what fails.
        jobs = env.submit_batch(**(SLOW if point == "progress" else {}))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline and set(env.statuses(jobs).values()) - {"succeeded", "failed", "cancelled"}:
            if not workers[-1].alive:
                # The worker died where the crash was injected; its jobs' leases run out and a new
                # worker's sweeper gives them back.
                workers.append(ThreadWorker(env.settings))
            time.sleep(0.2)
        wait_all_terminal(env.engine, timeout=1)
        assert faults.fired == [point]
        # A worker that failed or died is retried once: every job still ends delivered.
        assert set(env.statuses(jobs).values()) == {"succeeded"}
        assert all(n <= 2 for n in _attempts(env, jobs).values())
    finally:
        for w in workers:
            w.stop()
    check_invariants(env.engine)


def test_a_job_cancelled_while_queued_is_never_run(env: Env) -> None:
    job = env.submit(env.free)
    r = env.cancel(env.free, job)
    assert (r.status_code, r.json()["status"]) == (200, "cancelled")
    worker = ThreadWorker(env.settings)
    try:
        time.sleep(1.5)
        assert env.statuses([job]) == {job: "cancelled"}
        assert _attempts(env, [job]) == {job: 0}
    finally:
        worker.stop()
    check_invariants(env.engine)


@pytest.mark.parametrize("phase", ["generating", "delivering"])
def test_a_cancel_before_settlement_wins(env: Env, faults: Faults, phase: str) -> None:
    """Cancelled while it generates (at a progress tick) or while its images are encoded: the job
    ends cancelled at once, nothing of it is delivered or charged, its image bytes are deleted."""
    job_box: list[str] = []
    answers: list[httpx.Response] = []
    faults.arm("progress" if phase == "generating" else "encoding", "none",
               on_call=lambda: answers.append(env.cancel(env.paid, job_box[0])))
    worker = ThreadWorker(env.settings)
    try:
        job_box.append(env.submit(env.paid, **SLOW))
        wait_all_terminal(env.engine, timeout=SETTLE_TIMEOUT)
    finally:
        worker.stop()
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "cancelled")]
    assert env.statuses(job_box) == {job_box[0]: "cancelled"}
    body = env.client.get(f"/v1/generations/{job_box[0]}", headers=env.paid.headers).json()
    assert body["usage"]["images"] == 0 and body["outputs"] == []
    stored = [p for p in Path(env.settings.resolved_images_dir).rglob("*") if job_box[0] in str(p) and p.is_file()]
    assert stored == []
    check_invariants(env.engine)


def test_a_cancel_that_arrives_while_the_delivery_commits_is_refused_truthfully(env: Env, faults: Faults) -> None:
    """The settlement holds the job's row until it commits; a cancel arriving then waits and is
    answered 409 (the job succeeded and was charged once), never 200 followed by a charge."""
    job_box: list[str] = []
    answers: list[httpx.Response] = []

    def cancel_meanwhile() -> None:
        sender = threading.Thread(target=lambda: answers.append(env.cancel(env.paid, job_box[0])))
        sender.start()
        time.sleep(0.5)  # the cancel is now waiting for the settlement's row lock

    faults.arm("settlement", "none", on_call=cancel_meanwhile)
    worker = ThreadWorker(env.settings)
    try:
        job_box.append(env.submit(env.paid))
        wait_all_terminal(env.engine, timeout=SETTLE_TIMEOUT)
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [(409, "job_finished")]
    assert env.statuses(job_box) == {job_box[0]: "succeeded"}
    check_invariants(env.engine)


def test_seeded_random_interleavings_of_faults_and_cancels(env: Env) -> None:
    rng = random.Random(20261202)
    points = [p for p in POINTS if p != "heartbeat"]
    worker = ThreadWorker(env.settings)
    try:
        for _ in range(30):
            patches = pytest.MonkeyPatch()
            if rng.random() < 0.6:
                Faults(patches).arm(rng.choice(points), "db")
            customers = [rng.choice([env.free, env.paid]) for _ in range(rng.randint(1, 4))]
            jobs = [(c, env.submit(c, seed=rng.randrange(1000), n=rng.randint(1, 2), steps=rng.choice([4, 10])))
                    for c in customers]
            time.sleep(rng.uniform(0, 0.8))
            for customer, job in jobs:
                if rng.random() < 0.35:
                    answer = env.cancel(customer, job)
                    # Cancelled and not charged, or it had already ended: nothing in between.
                    assert answer.status_code in (200, 409), answer.text
                    if answer.status_code == 200:
                        assert answer.json()["status"] == "cancelled"
            wait_all_terminal(env.engine, timeout=SETTLE_TIMEOUT)
            patches.undo()
            check_invariants(env.engine)
    finally:
        worker.stop()
