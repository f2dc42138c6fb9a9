"""Raw pipeline throughput against throughput served through the whole API, in one run.

1. Raw: the demo pipeline called directly, back to back, at batch 1 and at the service's
   `max_batch_images` (`--batch`), each `--images` images.
2. Served: N concurrent clients each sending `POST /v1/images/generations` (same model,
   size, steps, sampler, guidance; b64_json response) through HTTP → auth → rate limit →
   moderation → quota → Postgres queue → worker (dynamic batching) → PNG → ledger → response.
3. Raw again in reverse order, so a machine that got busier (or quieter) during the served
   phase shows up as a difference between the raw figures rather than as a wrong ratio.

The headline ratio is served images/s over the raw pipeline at its better batch size (the
mean of its before and after figures); the ratio over batch 1 is printed too. CPU seconds per
image by process (API, worker, Postgres, the clients) say where served time goes, independent
of how busy the machine was. Layouts: `--layout process` (default; `ponyserve serve
--no-embedded-worker` plus `ponyserve worker`, the production layout) or `--layout embedded`
(the worker inside the API process, as `make run` has it).

Prints one JSON object. Usage:
  python bench/runtime.py [--size 512] [--steps 20] [--clients 8] [--images 24] [--batch 4] [--layout process]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service import (
    cpu_seconds,
    customer_key,
    drive_clients,
    percentile,
    postgres_cpu_seconds,
    running_service,
    scratch_database,
)

from app.config import demo_model_spec
from app.runtime.demo_model import write_demo_model
from app.runtime.pipelines import load_model
from app.runtime.types import GenerationParams, ImagePrompt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--images", type=int, default=24, help="images per phase (raw phases and served phase)")
    ap.add_argument("--layout", choices=["process", "embedded"], default="process")
    ap.add_argument("--batch", type=int, default=4, help="the service's max_batch_images, also measured raw")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the service")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ponyserve-bench-"))
    model_dir = work / "demo"
    write_demo_model(model_dir)
    spec = demo_model_spec(model_dir)
    model = load_model(spec, "cpu")
    params = GenerationParams(width=args.size, height=args.size, steps=args.steps, guidance_scale=5.0,
                              sampler="Euler a")
    prompt = spec.revise_prompt("a pony in a meadow")

    raw_cpu: dict[int, list[float]] = {1: [], args.batch: []}
    raw_calls: list[float] = []

    def raw_phase(batch: int, seed0: int) -> float:
        """Images/s of back-to-back calls of ``batch`` images (``--images`` in all)."""
        calls = max(1, args.images // batch)
        c_start, t0 = time.process_time(), time.perf_counter()
        for i in range(calls):
            c0 = time.perf_counter()
            model.generate(params, [ImagePrompt(prompt=prompt, negative_prompt="", seed=seed0 + i * batch + k)
                                    for k in range(batch)])
            if batch == 1:
                raw_calls.append(time.perf_counter() - c0)
        raw_cpu[batch].append((time.process_time() - c_start) / (calls * batch))
        return calls * batch / (time.perf_counter() - t0)

    model.generate(params, [ImagePrompt(prompt=prompt, negative_prompt="", seed=0)])  # warm-up
    # Symmetric around the served phase (1, b, served, b, 1), so a drift in the machine's load
    # weighs on both raw figures alike.
    raw = {1: [raw_phase(1, 1)], args.batch: [raw_phase(args.batch, 100)]}

    body = {"prompt": "a pony in a meadow", "size": f"{args.size}x{args.size}", "steps": args.steps,
            "response_format": "b64_json", "sampler": "Euler a", "guidance_scale": 5.0}
    env = {"PONYSERVE_MAX_BATCH_IMAGES": str(args.batch), **dict(item.split("=", 1) for item in args.env)}
    pids: dict[str, int] = {}
    with scratch_database() as url, running_service(url, work / "var", model_dir, pids=pids,
                                                    worker_process=args.layout == "process", **env) as (base, admin):
        key = customer_key(base, admin)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            r = client.post("/v1/images/generations", json={**body, "seed": 0})  # warm-up: the worker loads the model
            assert r.status_code == 200, r.text
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        cpu_before["postgres"], cpu_before["clients"] = postgres_cpu_seconds(), time.process_time()
        served_ips, latencies = drive_clients(base, key, body, args.images, args.clients)
        cpu_after = {role: cpu_seconds(pid) for role, pid in pids.items()}
        cpu_after["postgres"], cpu_after["clients"] = postgres_cpu_seconds(), time.process_time()
        # CPU seconds per served image, by process: the pipeline's own share is in "worker" (or
        # "api" when embedded), to be compared with a raw call's CPU time.
        served_cpu = {role: round((cpu_after[role] - cpu_before[role]) / args.images, 4) for role in cpu_before}
        # Jobs claimed together share their start time: that tells how many pipeline calls served them.
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
            calls = conn.execute("SELECT count(DISTINCT started_at), count(*) FROM jobs "
                                 "WHERE status = 'succeeded'").fetchone()

    raw[args.batch].append(raw_phase(args.batch, 5000))
    raw[1].append(raw_phase(1, 6000))
    raw_ips = {batch: statistics.mean(v) for batch, v in raw.items()}
    best_batch = max(raw_ips, key=lambda b: raw_ips[b])
    result = {
        "benchmark": "raw pipeline vs served throughput (bench/runtime.py)",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}",
        "params": {"size": args.size, "steps": args.steps, "clients": args.clients, "images": args.images,
                   "layout": args.layout, "max_batch_images": args.batch, "env": env},
        "raw_images_per_s": {f"batch_{b}": {"before": round(v[0], 4), "after": round(v[1], 4)}
                             for b, v in raw.items()},
        "raw_call_batch_1_p50_s": round(percentile(raw_calls, 50), 4),
        "served_images_per_s": round(served_ips, 4),
        "served_latency_s": {"p50": round(percentile(latencies, 50), 3), "p95": round(percentile(latencies, 95), 3)},
        "pipeline_calls_for_jobs": list(calls) if calls else None,
        # Against the raw pipeline at its best batch size: what the service could at most deliver.
        "ratio_served_over_raw_best": round(served_ips / raw_ips[best_batch], 3),
        "raw_best_batch": best_batch,
        "ratio_served_over_raw_batch_1": round(served_ips / raw_ips[1], 3),
        "cpu_s_per_image": {f"raw_batch_{b}": round(statistics.mean(v), 4) for b, v in raw_cpu.items()}
        | {"served_by_process": served_cpu},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
