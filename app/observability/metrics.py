"""Prometheus metrics. Counters live in the process that does the work; fleet-wide
numbers (queue depth, worker states) are read from Postgres at scrape time so every
API replica reports the same truth."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUEST_LATENCY = Histogram(
    "ponyserve_http_request_duration_seconds",
    "HTTP request latency by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOBS_FINISHED = Counter(
    "ponyserve_jobs_finished_total", "Jobs that reached a final status, by status and model.", ["status", "model"]
)
IMAGES_GENERATED = Counter("ponyserve_images_generated_total", "Images delivered (and metered).", ["model"])
BATCH_IMAGES = Histogram(
    "ponyserve_batch_images", "Images per pipeline call.", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
PIPELINE_SECONDS = Histogram(
    "ponyserve_pipeline_seconds", "Wall time of one pipeline call.", ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
