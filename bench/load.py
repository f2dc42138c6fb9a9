"""Runs bench/locustfile.py headless against a scratch service and prints its figures as JSON.

The production layout (API and `ponyserve worker` as separate processes, Postgres), several
tenants, the demo model. Usage: python bench/load.py [--tenants 4] [--users 24] [--seconds 60]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import running_service, scratch_database


def _tenant_keys(base: str, admin: str, count: int) -> list[str]:
    auth = {"Authorization": f"Bearer {admin}"}
    keys = []
    for i in range(count):
        acct = httpx.post(f"{base}/admin/accounts", json={"name": f"tenant-{i}", "plan": "internal"},
                          headers=auth).json()
        keys.append(httpx.post(f"{base}/admin/accounts/{acct['id']}/keys", json={"scopes": ["generate"]},
                               headers=auth).json()["key"])
    return keys


def _stats(prefix: Path) -> dict[str, dict[str, float]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                              "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]),
                              "rps": round(float(row["Requests/s"]), 2)}
                for row in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--users", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    from app.runtime.demo_model import write_demo_model

    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        model = Path(tmp) / "demo"
        write_demo_model(model)
        with running_service(url, Path(tmp) / "var", model, worker_process=True,
                             PONYSERVE_MAX_STREAMS_PER_KEY="64") as (base, admin):
            keys = _tenant_keys(base, admin, args.tenants)
            prefix = Path(tmp) / "locust"
            subprocess.run(
                [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")), "--headless",
                 "-u", str(args.users), "-r", str(max(1, args.users // 4)), "-t", f"{args.seconds}s",
                 "--host", base, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
                env={**os.environ, "PONYSERVE_LOAD_KEYS": ",".join(keys)}, check=False,
            )
            stats = _stats(prefix)
    print(json.dumps({"date": datetime.now(UTC).date().isoformat(), "machine": platform.processor() or "x86_64",
                      "cpus": os.cpu_count(), "tenants": args.tenants, "users": args.users,
                      "seconds": args.seconds, "stats": stats}, indent=2))


if __name__ == "__main__":
    main()
