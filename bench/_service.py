"""Benchmark plumbing: a throwaway Postgres database and a `ponyserve serve` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ADMIN_URL = os.environ.get("PONYSERVE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    name = f"ponyserve_bench_{secrets.token_hex(4)}"
    libpq = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(libpq, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_service(
    database_url: str, data_dir: Path, demo_model: Path, *, worker_process: bool = False,
    pids: dict[str, int] | None = None, ready_timeout: float = 120.0, **env: str
) -> Iterator[tuple[str, str]]:
    """Yields (base_url, admin_key) of a migrated service.

    The worker runs inside the API process (embedded, the default) or, with ``worker_process``,
    as its own ``ponyserve worker`` process beside an API started with ``--no-embedded-worker``:
    the production layout, where the pipeline has a process of its own. ``pids``, when given,
    receives the process ids by role ("api", "worker"). Readiness waits for a worker to report
    ready, which a model loaded (and compiled) at start-up delays: ``ready_timeout`` bounds it.
    """
    from app.cli import _bootstrap
    from app.config import Settings
    from app.migrate import upgrade_head

    upgrade_head(database_url)
    settings = Settings(database_url=database_url, data_dir=data_dir, demo_model_path=demo_model)
    admin = asyncio.run(_bootstrap(settings))
    assert admin
    port = _free_port()
    proc_env = {**os.environ, "PONYSERVE_DATABASE_URL": database_url, "PONYSERVE_DATA_DIR": str(data_dir),
                "PONYSERVE_DEMO_MODEL_PATH": str(demo_model), "PONYSERVE_LOG_JSON": "true", **env}
    serve = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    procs = [subprocess.Popen([*serve, "--no-embedded-worker"] if worker_process else serve, env=proc_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    if worker_process:
        procs.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--device", "cpu"], env=proc_env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if pids is not None:
        pids.update(zip(("api", "worker"), (p.pid for p in procs), strict=False))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("service did not become ready")
            time.sleep(0.2)
        yield base, admin
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time used so far by every postgres process on this machine (backends come and go)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    total += cpu_seconds(int(entry.name))
    return total


def customer_key(base: str, admin: str) -> str:
    auth = {"Authorization": f"Bearer {admin}"}
    acct = httpx.post(f"{base}/admin/accounts", json={"name": "bench", "plan": "internal"}, headers=auth).json()
    key = httpx.post(f"{base}/admin/accounts/{acct['id']}/keys", json={"scopes": ["generate"]}, headers=auth).json()
    return str(key["key"])


def drive_clients(base: str, key: str, body: dict[str, object], images: int, clients: int) -> tuple[float, list[float]]:
    """``clients`` concurrent callers send ``body`` to the synchronous endpoint until ``images``
    requests (one image each, seeds 1000…) have been answered; returns (images/s, latencies)."""
    headers = {"Authorization": f"Bearer {key}"}
    remaining = iter(range(images))
    lock = threading.Lock()
    latencies: list[float] = []

    def client_loop(_: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=900) as client:
            while True:
                with lock:
                    i = next(remaining, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = client.post("/v1/images/generations", json={**body, "seed": 1000 + i})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"generation failed: {r.status_code} {r.text}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return images / (time.perf_counter() - t0), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]
