"""The service's own overhead and served/raw throughput, measured in one run.

1. Raw: the demo pipeline called directly (same model, parameters, one image per call).
2. Served: the same generation through HTTP → Postgres queue → embedded worker → response
   (PNG encoded, base64), one client at a time; overhead = served - raw at p50 and p95.
3. Throughput under N concurrent clients, served images/s over raw images/s.

Prints one JSON object. Usage: python bench/overhead.py [--size 512] [--steps 20] [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import customer_key, drive_clients, percentile, running_service, scratch_database

from app.config import demo_model_spec
from app.runtime.demo_model import write_demo_model
from app.runtime.pipelines import load_model
from app.runtime.types import GenerationParams, ImagePrompt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--layout", choices=["embedded", "process"], default="embedded",
                    help="worker inside the API process, or `ponyserve worker` beside it")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ponyserve-bench-"))
    model_dir = work / "demo"
    write_demo_model(model_dir)
    model = load_model(demo_model_spec(model_dir), "cpu")
    params = GenerationParams(width=args.size, height=args.size, steps=args.steps, guidance_scale=5.0,
                              sampler="Euler a")
    prompt = demo_model_spec(model_dir).revise_prompt("a pony in a meadow")

    def raw_call(seed: int) -> float:
        t0 = time.perf_counter()
        model.generate(params, [ImagePrompt(prompt=prompt, negative_prompt="", seed=seed)])
        return time.perf_counter() - t0

    raw_call(0)  # warm-up
    raw = [raw_call(i) for i in range(args.requests)]

    body = {"prompt": "a pony in a meadow", "size": f"{args.size}x{args.size}", "steps": args.steps,
            "response_format": "b64_json", "sampler": "Euler a", "guidance_scale": 5.0}
    with scratch_database() as url, running_service(url, work / "var", model_dir,
                                                    worker_process=args.layout == "process") as (base, admin):
        key = customer_key(base, admin)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            client.post("/v1/images/generations", json={**body, "seed": 0})  # warm-up (model load)
            served: list[float] = []
            phases: dict[str, list[float]] = {"queue_wait": [], "pipeline_in_server": [], "encode_store_commit": [],
                                              "response": []}
            for i in range(args.requests):
                t0 = time.perf_counter()
                r = client.post("/v1/images/generations", json={**body, "seed": i})
                served.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                job = client.get(f"/v1/generations/{r.json()['id']}").json()
                created, started, finished = (datetime.fromisoformat(job[k]).timestamp()
                                              for k in ("created_at", "started_at", "finished_at"))
                gpu = job["usage"]["gpu_seconds"]
                phases["queue_wait"].append(started - created)
                phases["pipeline_in_server"].append(gpu)
                phases["encode_store_commit"].append(finished - started - gpu)
                phases["response"].append(served[-1] - (finished - created))

            n_conc = args.requests * 2
            served_ips, _ = drive_clients(base, key, body, n_conc, args.clients)

    raw_ips = 1 / statistics.mean(raw)
    result = {
        "benchmark": f"service overhead (HTTP → Postgres queue → {args.layout} worker → response)",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
        "params": {"size": args.size, "steps": args.steps, "requests": args.requests, "clients": args.clients,
                   "layout": args.layout},
        "raw_pipeline_s": {"p50": round(percentile(raw, 50), 4), "p95": round(percentile(raw, 95), 4)},
        "served_s": {"p50": round(percentile(served, 50), 4), "p95": round(percentile(served, 95), 4)},
        "overhead_ms": {
            "p50": round((percentile(served, 50) - percentile(raw, 50)) * 1000, 1),
            "p95": round((percentile(served, 95) - percentile(raw, 95)) * 1000, 1),
        },
        # Where the served time goes (p50 of each phase, from the job's own timestamps).
        "served_phases_ms_p50": {k: round(percentile(v, 50) * 1000, 1) for k, v in phases.items()},
        "throughput_images_per_s": {"raw_sequential": round(raw_ips, 3), "served_concurrent": round(served_ips, 3),
                                    "ratio_served_over_raw": round(served_ips / raw_ips, 3)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
