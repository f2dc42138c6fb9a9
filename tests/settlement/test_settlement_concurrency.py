"""Settlement under concurrency, across processes: a hundred submits from five accounts sharing one capped
licence, through two API processes, settled by a separate batching worker while cancels race it.

Every way of ending a job here (delivered, cancelled while queued, running or delivering) goes through
``app.settlement`` in the worker's or an API's transaction, against acceptances taking the same
counters in the API: nothing may deadlock, nothing may answer 5xx, and afterwards every counter is
exactly what the jobs' outputs say it should be.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import Customer, bootstrap_admin, make_settings, new_customer, service_env, spawn, spawn_api, stop_all
from sqlalchemy import Connection, Engine, create_engine, text

from app.db import sync_url

LICENSE = "shared-cap"
MODEL = "shared"
CAP = 60
REQUESTS = 100
# One request in this many asks for two images (a batch of four then splits jobs' images differently).
TWO_IMAGE_EVERY = 8
# One accepted job in this many is cancelled as soon as it is accepted, and another a little later
# (while it is claimed, generating or being delivered, or just after it ended).
CANCEL_EVERY = 7

MODELS_TOML = """
[[licenses]]
id = "{license}"
name = "Shared capped licence"
monthly_image_cap = {cap}
at_cap = "{at_cap}"

[[models]]
name = "{model}"
path = "{path}"
license = "{license}"
min_width = 64
min_height = 64
# Loaded before the worker reports ready, so the first batch does not wait for it.
preload = true
[models.defaults]
width = 64
height = 64
steps = 1
"""

# What a refusal may be: the licence cap (reject), a plan quota, a rate or in-flight limit.
EXPECTED_REFUSALS = {403: {"license_cap_reached"}, 402: {"daily_quota_exceeded"},
                     429: {"rate_limit_exceeded", "concurrency_limit_exceeded", "queue_limit_exceeded"}}
# Anything in a log that means a transaction was killed or a request blew up (or anything logged as an error).
LOG_PROBLEMS = re.compile(r"deadlock|Traceback|lock timeout|LockNotAvailable|\[(error|critical) *\]", re.IGNORECASE)


def _write_models(directory: Path, demo_model_dir: Path, at_cap: str) -> Path:
    path = directory / "models.toml"
    path.write_text(MODELS_TOML.format(license=LICENSE, cap=CAP, at_cap=at_cap, model=MODEL, path=demo_model_dir))
    return path


def _wait_ready(url: str, timeout: float = 90) -> None:
    """Until some worker has heartbeated as ready (its model preloaded)."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the worker never became ready"
        time.sleep(0.2)


def _accounts(client: httpx.Client, admin: str) -> dict[str, Customer]:
    """Five accounts: two on a paid plan (linked to Stripe below), one unpaid unlimited, one unpaid with a
    small daily quota (some 402s), one on the free plan (rate and in-flight limits: some 429s)."""
    auth = {"Authorization": f"Bearer {admin}"}
    for plan in ({"code": "settle-pro", "name": "Pro", "is_paid": True},
                 {"code": "settle-team", "name": "Team"},
                 {"code": "settle-small", "name": "Small", "daily_image_quota": 10}):
        created = client.post("/admin/plans", json=plan, headers=auth)
        assert created.status_code == 201, created.text
    return {"pro1": new_customer(client, admin, plan="settle-pro"),
            "pro2": new_customer(client, admin, plan="settle-pro"),
            "team": new_customer(client, admin, plan="settle-team"),
            "small": new_customer(client, admin, plan="settle-small"),
            "free": new_customer(client, admin, plan="free")}


async def _submit_and_maybe_cancel(client: httpx.AsyncClient, url: str, other_url: str, cust: Customer, n: int,
                                   cancel_after: float | None) -> tuple[httpx.Response, httpx.Response | None]:
    submitted = await client.post(f"{url}/v1/generations", json={"prompt": "a pony", "model": MODEL, "n": n},
                                  headers=cust.headers)
    if cancel_after is None or submitted.status_code != 202:
        return submitted, None
    # Through the other API process: it races the worker's claim, generation and settlement.
    await asyncio.sleep(cancel_after)
    return submitted, await client.post(f"{other_url}/v1/generations/{submitted.json()['id']}/cancel",
                                        headers=cust.headers)


def _cancel_after(i: int) -> float | None:
    if i % CANCEL_EVERY == 3:
        return 0.0
    if i % CANCEL_EVERY == 5:
        return 0.15 * (i % 11)
    return None


async def _fire(urls: list[str], customers: list[Customer]) -> list[tuple[int, tuple[httpx.Response,
                                                                                      httpx.Response | None]]]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=REQUESTS)) as client:
        plans = [(i, customers[i % len(customers)], 2 if i % TWO_IMAGE_EVERY == 0 else 1) for i in range(REQUESTS)]
        results = await asyncio.gather(*[
            _submit_and_maybe_cancel(client, urls[i % 2], urls[(i + 1) % 2], cust, n, cancel_after=_cancel_after(i))
            for i, cust, n in plans
        ])
        return [(n, r) for (_, _, n), r in zip(plans, results, strict=True)]


def _wait_terminal(engine: Engine, job_ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            open_jobs = conn.execute(text("SELECT id, status FROM jobs WHERE id = ANY(:ids) "
                                          "AND status NOT IN ('succeeded', 'failed', 'cancelled')"),
                                     {"ids": job_ids}).all()
        if not open_jobs:
            return
        assert time.monotonic() < deadline, f"jobs still unfinished: {Counter(s for _, s in open_jobs)}"
        time.sleep(0.3)


def _scalar(conn: Connection, sql: str, **params: object) -> int:
    return int(conn.execute(text(sql), params).scalar_one())


@pytest.mark.parametrize("at_cap", ["reject", "allow_overage"])
def test_shared_capped_licence_settles_exactly_under_concurrency(
    at_cap: str, pg_factory: Callable[[], str], demo_model_dir: Path, tmp_path: Path,
) -> None:
    started = time.monotonic()
    url = pg_factory()
    models = _write_models(tmp_path, demo_model_dir, at_cap)
    settings = make_settings(url, tmp_path, demo_model_dir, models_file=models)
    env = service_env(url, tmp_path, demo_model_dir, PONYSERVE_MODELS_FILE=str(models),
                      PONYSERVE_BATCH_WINDOW_MS="200", PONYSERVE_MAX_BATCH_IMAGES="4")
    admin = bootstrap_admin(settings)
    logs = [tmp_path / "worker.log", tmp_path / "api1.log", tmp_path / "api2.log"]
    engine = create_engine(sync_url(url))
    procs = []
    try:
        # The worker first: it loads torch and its model while the API processes start.
        procs.append(spawn(["worker", "--device", "cpu"], env, logs[0]))
        (a1, u1), (a2, u2) = spawn_api(env, logs[1]), spawn_api(env, logs[2])
        procs += [a1, a2]
        with httpx.Client(base_url=u1, timeout=60) as client:
            customers = _accounts(client, admin)
            _wait_ready(u1)
        paid = [customers["pro1"].account_id, customers["pro2"].account_id]
        with engine.begin() as conn:
            # Linked to Stripe (no Stripe is configured: the outbox rows just wait), so delivered
            # images of the paid accounts must each get exactly one billing-outbox row.
            for i, account_id in enumerate(paid):
                conn.execute(text("UPDATE accounts SET stripe_customer_id = :c WHERE id = :a"),
                             {"c": f"cus_settle{i}", "a": account_id})
            # The unpaid account is linked too: linked or not, only paid-plan usage is billable.
            conn.execute(text("UPDATE accounts SET stripe_customer_id = 'cus_settle_team' WHERE id = :a"),
                         {"a": customers["team"].account_id})

        fired = asyncio.run(_fire([u1, u2], list(customers.values())))
        statuses = Counter(sub.status_code for _, (sub, _) in fired)
        server_errors = [(r.status_code, r.text[:300]) for _, pair in fired for r in pair
                         if r is not None and r.status_code >= 500]
        assert not server_errors, server_errors
        for _, (sub, _) in fired:
            if sub.status_code != 202:
                assert sub.status_code in EXPECTED_REFUSALS, (sub.status_code, sub.text)
                assert sub.json()["error"]["code"] in EXPECTED_REFUSALS[sub.status_code], sub.text
        accepted = {sub.json()["id"]: n for n, (sub, _) in fired if sub.status_code == 202}
        cancels = [(sub.json()["id"], c) for _, (sub, c) in fired if c is not None]
        for _, c in cancels:
            # 200: cancelled; 409: it had already finished (the worker was quicker).
            assert c.status_code in (200, 409), (c.status_code, c.text)
            if c.status_code == 200:
                assert c.json()["status"] == "cancelled", c.text
            else:
                assert c.json()["error"]["code"] == "job_finished", c.text
        cancelled_by_us = {job_id for job_id, c in cancels if c.status_code == 200}
        assert cancels and accepted
        if at_cap == "reject":
            assert statuses[403] > 0, statuses  # the cap was reached, and refused
        else:
            assert statuses[403] == 0, statuses

        _wait_terminal(engine, list(accepted))
        stop_all(procs)  # backends exit, so their deadlock counts reach pg_stat_database
        elapsed = time.monotonic() - started

        for log in logs:
            problems = [line for line in log.read_text(errors="replace").splitlines() if LOG_PROBLEMS.search(line)]
            assert not problems, f"{log.name}: {problems[:20]}"

        with engine.connect() as conn:
            deadlocks = _scalar(conn, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            assert deadlocks == 0, f"{deadlocks} deadlocks in the test database"

            jobs = {row.id: row for row in conn.execute(text(
                "SELECT j.id, j.account_id, j.status, j.n, j.error_code, j.reservation_state, j.license_overage, "
                "  (SELECT count(*) FROM job_outputs o WHERE o.job_id = j.id) AS outputs, "
                "  (SELECT count(*) FROM job_outputs o WHERE o.job_id = j.id AND o.charged) AS charged, "
                "  (SELECT count(*) FROM usage_ledger u WHERE u.job_id = j.id) AS ledger "
                "FROM jobs j WHERE j.model = :m"), {"m": MODEL})}
            # Every job in the database is one the API accepted, and each ended.
            assert set(jobs) == set(accepted)
            failed = [(j.id, j.error_code) for j in jobs.values() if j.status not in ("succeeded", "cancelled")]
            assert not failed, failed
            for job in jobs.values():
                assert job.n == accepted[job.id]
                if job.status == "succeeded":
                    assert job.reservation_state == "committed", job
                    assert job.outputs == job.charged == job.ledger == job.n, job
                else:  # cancelled: released, nothing stored, nothing charged
                    assert job.reservation_state == "released", job
                    assert (job.outputs, job.ledger) == (0, 0), job
            assert cancelled_by_us <= {j.id for j in jobs.values() if j.status == "cancelled"}
            assert {j.id for j in jobs.values() if j.status == "cancelled"} <= cancelled_by_us

            charged_by_account = Counter({a: 0 for a in (c.account_id for c in customers.values())})
            charged_by_key = Counter({c.key_id: 0 for c in customers.values()})
            key_of = {c.account_id: c.key_id for c in customers.values()}
            for job in jobs.values():
                if job.status == "succeeded":
                    charged_by_account[job.account_id] += job.charged
                    charged_by_key[key_of[job.account_id]] += job.charged
            total_charged = sum(charged_by_account.values())

            # Quota counters: usage is the charged images, for every scope and period; no reservation left.
            assert _scalar(conn, "SELECT count(*) FROM quota_counters WHERE reserved <> 0") == 0, conn.execute(
                text("SELECT * FROM quota_counters WHERE reserved <> 0")).all()
            for scope, expected in (("account", charged_by_account), ("key", charged_by_key)):
                for period in ("day", "month"):
                    used: dict[str, int] = dict(conn.execute(text(
                        "SELECT scope_id, sum(used) FROM quota_counters WHERE scope = :s AND period = :p "
                        "AND scope_id = ANY(:ids) GROUP BY scope_id"), {"s": scope, "p": period,
                                                                        "ids": list(expected)}).tuples().all())
                    assert {k: used.get(k, 0) for k in expected} == dict(expected), (scope, period)
            small = customers["small"].account_id
            assert charged_by_account[small] <= 10

            # The licence: used == ledger rows == charged images; nothing reserved; within the cap on reject.
            used, reserved, overage = conn.execute(text(
                "SELECT coalesce(sum(used), 0), coalesce(sum(reserved), 0), coalesce(sum(overage), 0) "
                "FROM license_usage_daily WHERE license_id = :l"), {"l": LICENSE}).one()
            assert _scalar(conn, "SELECT count(*) FROM license_usage_daily WHERE reserved <> 0") == 0
            ledger_rows = _scalar(conn, "SELECT count(*) FROM usage_ledger WHERE license = :l", l=LICENSE)
            assert used == ledger_rows == total_charged > 0
            overage_rows = _scalar(conn, "SELECT count(*) FROM usage_ledger WHERE license = :l AND license_overage",
                                   l=LICENSE)
            assert overage == overage_rows == sum(j.charged for j in jobs.values()
                                                  if j.status == "succeeded" and j.license_overage)
            # Each image beyond the cap is flagged overage. (The converse does not hold: a job accepted
            # while the cap was full is overage even if cancels free room before it is delivered.)
            assert used - overage <= CAP
            if at_cap == "reject":
                assert used + reserved <= CAP
                assert overage == 0
            else:
                accepted_images = sum(accepted.values())
                assert accepted_images > CAP  # the cap was passed, as the licence allows
                assert overage > 0

            # Billing: one outbox row per ledger row of the paid, linked accounts, and none for anyone else.
            outbox: dict[str, int] = dict(conn.execute(text(
                "SELECT account_id, count(*) FROM billing_outbox GROUP BY account_id")).tuples().all())
            paid_ledger: dict[str, int] = dict(conn.execute(text(
                "SELECT account_id, count(*) FROM usage_ledger WHERE plan_paid GROUP BY account_id")).tuples().all())
            assert outbox == paid_ledger
            assert set(outbox) <= set(paid)
            assert sum(outbox.values()) == charged_by_account[paid[0]] + charged_by_account[paid[1]] > 0
            assert _scalar(conn, "SELECT count(*) FROM billing_outbox o JOIN usage_ledger u ON u.id = o.usage_id "
                                 "WHERE u.account_id <> o.account_id") == 0
            # Images of jobs cancelled while being delivered were discarded: only delivered images are stored.
            stored = [f for f in (tmp_path / "images").rglob("*") if f.is_file()]
            assert len(stored) == _scalar(conn, "SELECT count(*) FROM job_outputs")
            lost_races = logs[0].read_text(errors="replace").count("was cancelled or taken before it was delivered")

            # The worker batched: jobs delivered by one pipeline call share their finish time.
            batch_sizes = Counter(conn.execute(text(
                "SELECT count(*) FROM jobs WHERE model = :m AND status = 'succeeded' GROUP BY finished_at"),
                {"m": MODEL}).scalars().all())
            assert max(batch_sizes) > 1, batch_sizes
            # How far the cancelled jobs had got: claimed by the worker (running or further) or still queued.
            claimed_when_cancelled = _scalar(conn, "SELECT count(*) FROM jobs WHERE model = :m AND status = "
                                                   "'cancelled' AND started_at IS NOT NULL", m=MODEL)
        print(f"\n[{at_cap}] responses {dict(statuses)}; accepted {len(accepted)} jobs ({sum(accepted.values())} "
              f"images); cancels {dict(Counter(c.status_code for _, c in cancels))} ({claimed_when_cancelled} of "
              f"the cancelled already claimed, {lost_races} while delivering); charged {total_charged} images, "
              f"overage {overage}; batches (jobs: calls) {dict(sorted(batch_sizes.items()))}; {elapsed:.1f}s")
    finally:
        stop_all(procs)
        engine.dispose()
