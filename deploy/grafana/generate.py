"""Writes ponyserve.json, the Grafana dashboard, from the panel list below.

The dashboard is generated rather than edited in Grafana's UI so that its queries stay reviewable
and testable: tests/deploy checks that every metric they name is one the service exports, and that
ponyserve.json is what this script writes. After changing a panel: python deploy/grafana/generate.py

Heavy queries (quantiles, per-route rates over every replica) read the recording rules in
deploy/prometheus/recording.rules.yml. Database-backed gauges are reported alike by every API
replica, so they are combined with max, never sum.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("ponyserve.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

Panel = dict[str, Any]


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "format": fmt}
    if instant:
        t.update(instant=True, range=False)
    return t


def panel(title: str, kind: str, targets: list[dict[str, Any]], *, unit: str = "short", width: int = 8,
          height: int = 8, description: str = "", options: dict[str, Any] | None = None,
          custom: dict[str, Any] | None = None) -> Panel:
    return {
        "title": title, "type": kind, "datasource": DATASOURCE, "description": description,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit, **({"custom": custom} if custom else {})}, "overrides": []},
        "options": options or {},
        "gridPos": {"w": width, "h": height},
    }


def timeseries(title: str, *targets: dict[str, Any], unit: str = "short", width: int = 8, description: str = "",
               stack: bool = False) -> Panel:
    custom = {"stacking": {"mode": "normal" if stack else "none"}, "fillOpacity": 10 if stack else 0}
    return panel(title, "timeseries", list(targets), unit=unit, width=width, description=description,
                 options={"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}},
                 custom=custom)


def stat(title: str, expr: str, *, unit: str = "short", description: str = "") -> Panel:
    return panel(title, "stat", [target(expr)], unit=unit, width=4, height=4, description=description,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area"})


def table(title: str, expr: str, *, width: int = 8, height: int = 8, description: str = "") -> Panel:
    return panel(title, "table", [target(expr, instant=True, fmt="table")], width=width, height=height,
                 description=description, options={"showHeader": True})


ROWS: list[tuple[str, list[Panel]]] = [
    ("Overview", [
        stat("Requests / s", "sum(route_status:ponyserve_http_requests:rate5m)", unit="reqps"),
        stat("5xx ratio", 'sum(route_status:ponyserve_http_requests:rate5m{status=~"5..", route!~"/readyz|/healthz"})'
                          ' / sum(route_status:ponyserve_http_requests:rate5m{route!~"/readyz|/healthz"})',
             unit="percentunit", description="Probe routes left out: /readyz answers 503 by design."),
        stat("Queue depth", "max(ponyserve_queue_depth)"),
        stat("Workers serving", 'sum(state:ponyserve_workers:count{state=~"ready|busy"})',
             description="Workers heartbeating as ready or busy."),
        stat("Images / s", "sum(model:ponyserve_images_generated:rate5m)"),
        stat("Queue wait p95", "ponyserve:queue_wait_seconds:p95_5m", unit="s"),
        table("Releases running", "count by (version) (ponyserve_build_info)", width=24, height=5,
              description="Processes per release: two rows while a rollout runs old and new code side by side."),
    ]),
    ("HTTP", [
        timeseries("Requests by route", target("sum by (route) (route_status:ponyserve_http_requests:rate5m)",
                                               "{{route}}"), unit="reqps", width=12),
        timeseries("Latency by route",
                   target("route:ponyserve_http_request_duration_seconds:p50_5m", "{{route}} p50"),
                   target("route:ponyserve_http_request_duration_seconds:p95_5m", "{{route}} p95"),
                   target("route:ponyserve_http_request_duration_seconds:p99_5m", "{{route}} p99"),
                   unit="s", width=12,
                   description="Synchronous generation routes include the image's generation time."),
        timeseries("4xx by route and status",
                   target('sum by (route, status) (route_status:ponyserve_http_requests:rate5m{status=~"4.."})',
                          "{{route}} {{status}}"), unit="reqps", width=12),
        timeseries("5xx by route and status",
                   target('sum by (route, status) (route_status:ponyserve_http_requests:rate5m{status=~"5.."})',
                          "{{route}} {{status}}"), unit="reqps", width=12,
                   description="/readyz answers 503 by design while the database or every worker is away."),
    ]),
    ("Queue and jobs", [
        timeseries("Queue depth and running jobs",
                   target("max(ponyserve_queue_depth)", "queued"),
                   target('max(ponyserve_jobs{status="running"})', "running")),
        timeseries("Queue wait",
                   target("ponyserve:queue_wait_seconds:p50_5m", "p50"),
                   target("ponyserve:queue_wait_seconds:p95_5m", "p95"),
                   target("max(ponyserve_queue_oldest_age_seconds)", "oldest still waiting"),
                   unit="s", description="Enqueue to first claim by a worker."),
        timeseries("Queue wait p95 by model",
                   target("histogram_quantile(0.95, sum by (model, le) "
                          f"(rate(ponyserve_queue_wait_seconds_bucket[{RATE}])))", "{{model}}"), unit="s"),
        timeseries("Jobs finished by outcome", target("status:ponyserve_jobs_finished:rate5m", "{{status}}"),
                   unit="ops", stack=True),
        timeseries("Images per second by model", target("model:ponyserve_images_generated:rate5m", "{{model}}"),
                   unit="ops", stack=True),
        timeseries("Pipeline time by model",
                   target("model:ponyserve_pipeline_seconds:p50_5m", "{{model}} p50"),
                   target("model:ponyserve_pipeline_seconds:p95_5m", "{{model}} p95"),
                   unit="s", description="One pipeline call: the whole batch, all steps, VAE decode."),
        timeseries("Batch size", target("ponyserve:batch_images:mean5m", "mean images per call"),
                   description="Images per pipeline call; more per call is more throughput per GPU."),
        panel("Batch size distribution", "heatmap",
              [target(f"sum by (le) (increase(ponyserve_batch_images_bucket[{RATE}]))", "{{le}}", fmt="heatmap")],
              width=16, options={"calculate": False, "yAxis": {"unit": "short"}}),
    ]),
    ("Workers and GPUs", [
        timeseries("Workers by state", target("state:ponyserve_workers:count", "{{state}}"), stack=True),
        table("Worker states now", "max by (worker, state) (ponyserve_worker_state) == 1", width=16,
              description="Recently heartbeating workers; a stale one drops off after PONYSERVE_WORKER_STALE_SECONDS."),
        timeseries("GPU memory used",
                   target("ponyserve_gpu_memory_used_bytes", "{{worker}} {{device}}"),
                   target("ponyserve_gpu_memory_total_bytes", "{{worker}} {{device}} total"),
                   unit="bytes", description="From NVML, exported by each GPU worker on its metrics port."),
        timeseries("GPU memory used (fraction)",
                   target("ponyserve_gpu_memory_used_bytes / ponyserve_gpu_memory_total_bytes",
                          "{{worker}} {{device}}"),
                   unit="percentunit"),
        timeseries("GPU utilisation", target("ponyserve_gpu_utilization_ratio", "{{worker}} {{device}}"),
                   unit="percentunit"),
    ]),
    ("Billing", [
        timeseries("Usage events waiting for Stripe", target("max(ponyserve_billing_outbox_backlog)", "pending")),
        timeseries("Oldest unsent usage event", target("max(ponyserve_billing_outbox_oldest_age_seconds)", "age"),
                   unit="s", description="Stripe refuses meter events older than 35 days."),
        timeseries("Outbox rows by status", target("max by (status) (ponyserve_billing_outbox_rows)", "{{status}}"),
                   description="expired, unconfirmed and failed rows are set aside and need an operator."),
        timeseries("Meter events sent and failed",
                   target(f"max(rate(ponyserve_billing_outbox_sent_total[{RATE}]))", "sent"),
                   target(f"max(rate(ponyserve_billing_outbox_failures_total[{RATE}]))", "failed attempts"),
                   unit="ops", width=12),
        timeseries("Stripe webhooks",
                   target(f"sum by (outcome) (rate(ponyserve_billing_webhook_events_total[{RATE}]))", "{{outcome}}"),
                   target(f"sum by (reason) (rate(ponyserve_billing_webhook_rejected_total[{RATE}]))",
                          "rejected: {{reason}}"),
                   target("max(ponyserve_billing_webhooks_unprocessed)", "awaiting retry"),
                   unit="short", width=12),
    ]),
    ("Partner webhooks", [
        timeseries("Deliveries pending", target("max by (state) (ponyserve_webhook_deliveries_pending)", "{{state}}"),
                   description="due: a dispatcher could send it now; scheduled: waiting for a later retry."),
        timeseries("Oldest due delivery", target("max(ponyserve_webhook_oldest_due_age_seconds)", "waited"), unit="s"),
        timeseries("Delivery attempts by outcome",
                   target(f"sum by (outcome) (rate(ponyserve_webhook_attempts_total[{RATE}]))", "{{outcome}}"),
                   unit="ops", stack=True),
    ]),
    ("Licences", [
        timeseries("Image cap used",
                   target("max by (license) (ponyserve_license_usage_ratio)", "{{license}}"),
                   target("max by (license, level) (ponyserve_license_warning_threshold)", "{{license}} {{level}}"),
                   unit="percentunit",
                   description="(used + reserved) / cap for the cap period, against the thresholds."),
        timeseries("Images against cap",
                   target("max by (license) (ponyserve_license_images_used)", "{{license}} used"),
                   target("max by (license) (ponyserve_license_images_reserved)", "{{license}} reserved"),
                   target("max by (license) (ponyserve_license_image_cap)", "{{license}} cap")),
        timeseries("Revenue against revenue cap", target("max by (license) (ponyserve_license_revenue_ratio)",
                                                         "{{license}}"), unit="percentunit",
                   description="Trailing 12 months."),
        table("Licence states", "max by (license, state) (ponyserve_license_state) == 1", width=24),
    ]),
    ("Moderation", [
        timeseries("Prompt blocks by category",
                   target(f"sum by (category) (rate(ponyserve_moderation_blocks_total[{RATE}]))", "{{category}}"),
                   unit="ops", stack=True, description="csam blocks are the strikes that suspend accounts."),
        timeseries("Automatic suspensions", target("sum(increase(ponyserve_account_suspensions_total[1h]))",
                                                   "per hour")),
        timeseries("Output review",
                   target(f"sum by (model) (rate(ponyserve_moderation_withheld_images_total[{RATE}]))",
                          "withheld {{model}}"),
                   target(f"sum by (decision) (rate(ponyserve_moderation_review_decisions_total[{RATE}]))",
                          "{{decision}}"),
                   target(f"sum(rate(ponyserve_moderation_classifier_failures_total[{RATE}]))", "classifier failures"),
                   unit="ops"),
    ]),
]


def layout(rows: list[tuple[str, list[Panel]]]) -> list[Panel]:
    """Rows of panels on Grafana's 24-column grid, left to right, wrapping; ids in order."""
    panels: list[Panel] = []
    y = 0
    for title, row_panels in rows:
        panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        y += 1
        x, row_height = 0, 0
        for p in row_panels:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > 24:
                x, y, row_height = 0, y + row_height, 0
            p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            x += w
            row_height = max(row_height, h)
            panels.append(p)
        y += row_height
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "uid": "ponyserve",
        "title": "ponyserve",
        "description": "Requests, queue, workers and GPUs, billing, webhooks, licences and moderation.",
        "tags": ["ponyserve"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {"list": [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False, "multi": False,
        }]},
        "annotations": {"list": []},
        "panels": layout(ROWS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)
