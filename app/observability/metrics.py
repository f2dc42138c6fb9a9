"""Prometheus metrics. Counters live in the process that does the work; fleet-wide
numbers (queue depth, worker states) are read from Postgres at scrape time so every
API replica reports the same truth.

Names follow Prometheus' conventions: ``ponyserve_`` prefix, base units (seconds, bytes, ratios
in [0, 1]), ``_total`` on counters, and only bounded labels (route templates, models, states;
never job, key or account ids).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import REGISTRY, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
# Observed by the worker when it claims a job for the first time. A retried job is left out: its
# age then includes the attempt that was lost, which says nothing about how long the queue is.
# The buckets reach past the synchronous wait limit (300 s) so the alert threshold sits inside them.
QUEUE_WAIT = Histogram(
    "ponyserve_queue_wait_seconds", "Time from enqueue to a worker's first claim of the job.", ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)


def _release() -> str:
    try:
        return version("ponyserve")
    except PackageNotFoundError:  # a source tree run without installing it
        return "unknown"


# Lets a dashboard show which release each process runs, and an operator see both during a rollout.
BUILD_INFO = Info("ponyserve_build", "The running release.")
BUILD_INFO.info({"version": _release(), "python": platform.python_version()})


class DatabaseUp(Collector):
    """``ponyserve_database_up``: whether this API process's last database check answered.

    Absent until the first check, so a process that never checks (a worker) does not report a
    database outage it knows nothing about."""

    def __init__(self) -> None:
        self.value: float | None = None

    def set(self, up: bool) -> None:
        self.value = 1.0 if up else 0.0

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("ponyserve_database_up", "1 when the database answered this process's last check.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.value is None:
            return
        up = GaugeMetricFamily("ponyserve_database_up", "1 when the database answered this process's last check.")
        up.add_metric([], self.value)
        yield up


DATABASE_UP = DatabaseUp()
REGISTRY.register(DATABASE_UP)
