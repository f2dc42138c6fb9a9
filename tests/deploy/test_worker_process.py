"""`ponyserve worker` with PONYSERVE_WORKER_METRICS_PORT serves its own /metrics (guarded by the
metrics token), /healthz, and a /readyz that follows its state; a CPU worker exports no GPU gauges."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from harness import free_port, service_env, spawn, stop_all


def test_the_worker_serves_metrics_and_probes_on_its_own_port(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    port = free_port()
    env = service_env(pg_factory(), tmp_path, demo_model_dir, PONYSERVE_WORKER_METRICS_PORT=str(port),
                      PONYSERVE_WORKER_METRICS_HOST="127.0.0.1", PONYSERVE_METRICS_TOKEN="worker-scrape")
    log = tmp_path / "worker.log"
    worker = spawn(["worker", "--device", "cpu"], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "state": "ready"}
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/metrics").status_code == 401
        text = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer worker-scrape"}).text
        for name in ("ponyserve_build_info{", "# TYPE ponyserve_queue_wait_seconds histogram",
                     "# TYPE ponyserve_jobs_finished_total counter", "# TYPE ponyserve_pipeline_seconds histogram"):
            assert name in text, name
        assert "ponyserve_gpu_" not in text
        # The database-backed gauges are the API's: a worker does not report a database it never checks.
        assert "ponyserve_database_up" not in text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        stop_all([worker])
