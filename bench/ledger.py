"""Usage-report speed as the ledger grows, and the per-request cost of the quota path.

1. Fills a scratch Postgres database with N ledger rows for the current month (jobs,
   outputs, ledger rows and the daily rollup the application maintains beside them),
   then times `GET /admin/usage?group_by=account` through a real `ponyserve serve`.
   Run at 10k and 1M rows.
2. Times the quota + rate-limit path of one request (GCRA token, in-flight check,
   reservation on four counters, in one transaction) against Postgres.

Prints JSON. Usage: python bench/ledger.py [--sizes 10000 1000000] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import percentile, scratch_database

from app.accounts import service as accounts
from app.db import Database
from app.kit.ids import new_id
from app.migrate import upgrade_head
from app.queue.models import Job
from app.quotas import service as quotas
from app.quotas.limits import effective_limits

FILL_SQL = """
WITH params AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AS m0,
                       extract(day FROM now() AT TIME ZONE 'UTC')::int AS days)
INSERT INTO jobs (id, account_id, api_key_id, status, priority, model, license, prompt, negative_prompt,
                  revised_prompt, revised_negative_prompt, width, height, steps, guidance_scale, sampler, seed, n,
                  output_format, batch_key, attempts, cancel_requested, progress_step, created_at, finished_at,
                  reservation_state)
SELECT 'gen_b' || g, 'acct_b' || (g %% 100), 'key_b' || (g %% 200), 'succeeded', 0,
       CASE WHEN g %% 3 = 0 THEN 'pony-v6' ELSE 'demo' END, 'lic', 'p', '', 'p', '', 1024, 1024, 30, 7, 'Euler a',
       g, 1, 'png', 'k', 1, false, 30,
       (SELECT m0 + ((g %% days) || ' days')::interval FROM params) AT TIME ZONE 'UTC',
       (SELECT m0 + ((g %% days) || ' days')::interval FROM params) AT TIME ZONE 'UTC', 'committed'
FROM generate_series(%(lo)s, %(hi)s - 1) AS g;
INSERT INTO job_outputs (id, job_id, index, seed, format, width, height, storage_key, size_bytes, sha256, created_at)
SELECT 'img_b' || g, 'gen_b' || g, 0, g, 'png', 1024, 1024, 'k', 1, 'x', j.created_at
FROM generate_series(%(lo)s, %(hi)s - 1) AS g JOIN jobs j ON j.id = 'gen_b' || g;
INSERT INTO usage_ledger (job_id, image_id, api_key_id, account_id, model, license, images, width, height, steps,
                          megapixel_steps, gpu_seconds, price_units, usage_day, created_at)
SELECT j.id, 'img_b' || g, j.api_key_id, j.account_id, j.model, j.license, 1, 1024, 1024, 30, 31.45728, 0.55, 1000,
       (j.created_at AT TIME ZONE 'UTC')::date, j.created_at
FROM generate_series(%(lo)s, %(hi)s - 1) AS g JOIN jobs j ON j.id = 'gen_b' || g;
"""

ROLLUP_SQL = """
TRUNCATE usage_daily;
INSERT INTO usage_daily (day, account_id, api_key_id, model, license, images, megapixel_steps, gpu_seconds,
                         price_units)
SELECT usage_day, account_id, api_key_id, model, max(license), sum(images),
       sum(megapixel_steps), sum(gpu_seconds), sum(price_units)
FROM usage_ledger GROUP BY 1, 2, 3, 4;
ANALYZE;
"""


def fill(libpq: str, start: int, stop: int) -> None:
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # bulk load: skip FK triggers
        for lo in range(start, stop, 200_000):
            for statement in FILL_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement, {"lo": lo, "hi": min(stop, lo + 200_000)})
        conn.execute(ROLLUP_SQL)


def time_report(base: str, admin: str, requests: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        c.get("/admin/usage", params={"group_by": "account"})
        samples = []
        for _ in range(requests):
            t0 = time.perf_counter()
            r = c.get("/admin/usage", params={"group_by": "account"})
            samples.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return {"p50_ms": round(percentile(samples, 50) * 1000, 2), "p95_ms": round(percentile(samples, 95) * 1000, 2)}


async def quota_path(url: str, requests: int) -> dict[str, float]:
    db = Database(url, pool_size=2)
    async with db.unit_of_work() as s:
        await accounts.create_plan(s, {"code": "bench", "name": "bench", "monthly_image_quota": 10**9,
                                       "daily_image_quota": 10**9, "requests_per_minute": 10**6, "burst": 10**6,
                                       "max_concurrent_jobs": 10**6, "max_queued_jobs": 10**6, "max_width": 1024,
                                       "max_height": 1024, "max_steps": 50, "max_n": 4, "priority": 0})
        account = await accounts.create_account(s, name="bench", plan_code="bench")
        key, _ = await accounts.create_key(s, account_id=account.id)
    limits = effective_limits(account, key)
    samples = []
    for _ in range(requests + 5):
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        async with db.unit_of_work() as s:
            await quotas.take_rate_token(s, key, limits, now)
        async with db.unit_of_work() as s:
            await quotas.check_inflight(s, key, limits)
            await quotas.reserve(s, account, key, Job(id=new_id("gen"), account_id=account.id, api_key_id=key.id,
                                                      n=1), now)
        samples.append(time.perf_counter() - t0)
    await db.dispose()
    samples = samples[5:]
    return {"p50_ms": round(percentile(samples, 50) * 1000, 2), "p95_ms": round(percentile(samples, 95) * 1000, 2)}


def main() -> None:
    from _service import running_service

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--requests", type=int, default=30)
    args = ap.parse_args()
    result: dict[str, object] = {
        "benchmark": "admin usage report vs ledger size; quota + rate-limit path",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()} cpus={__import__('os').cpu_count()} postgres@127.0.0.1",
    }
    with scratch_database() as url:
        upgrade_head(url)
        result["quota_rate_limit_path"] = asyncio.run(quota_path(url, args.requests * 10))
    reports = {}
    work = Path(tempfile.mkdtemp(prefix="ponyserve-ledger-"))
    from app.runtime.demo_model import write_demo_model

    write_demo_model(work / "demo")
    with scratch_database() as url:
        libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
        filled = 0
        with running_service(url, work / "var", work / "demo", PONYSERVE_MAX_BATCH_IMAGES="1") as (base, admin):
            for size in sorted(args.sizes):
                t0 = time.perf_counter()
                fill(libpq, filled, size)
                filled = size
                reports[str(size)] = {**time_report(base, admin, args.requests),
                                      "fill_seconds": round(time.perf_counter() - t0, 1)}
    result["admin_usage_month_by_account"] = reports
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
