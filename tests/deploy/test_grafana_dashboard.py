"""deploy/grafana/ponyserve.json is importable anywhere (the data source is a variable, the grid is
consistent), is what deploy/grafana/generate.py writes, and shows what operators asked to see."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from deploy_files import DASHBOARD, DEPLOY, dashboard_queries, metric_names, recording_rules, resolve


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("dashboard_generator", DEPLOY / "grafana" / "generate.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert DASHBOARD.read_text() == generator.render(), "run: python deploy/grafana/generate.py"


def test_the_data_source_is_a_variable_everywhere() -> None:
    dashboard = _dashboard()
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == ref and t["expr"].strip(), panel["title"]
    # Nothing tied to one Grafana installation.
    assert "__inputs" not in dashboard and "id" not in dashboard


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_shows_what_the_operations_guide_promises() -> None:
    queried = resolve({n for expr in dashboard_queries() for n in metric_names(expr)}, recording_rules())
    wanted = {
        # requests and latency by route, 4xx/5xx
        "ponyserve_http_request_duration_seconds_count", "ponyserve_http_request_duration_seconds_bucket",
        # queue depth and wait, jobs by outcome, images per second by model, batch sizes, pipeline time
        "ponyserve_queue_depth", "ponyserve_queue_wait_seconds_bucket", "ponyserve_jobs_finished_total",
        "ponyserve_images_generated_total", "ponyserve_batch_images_bucket", "ponyserve_pipeline_seconds_bucket",
        # worker states, GPU memory and utilisation per worker
        "ponyserve_worker_state", "ponyserve_gpu_memory_used_bytes", "ponyserve_gpu_memory_total_bytes",
        "ponyserve_gpu_utilization_ratio",
        # billing outbox, webhook deliveries, licence usage against caps, moderation blocks, releases
        "ponyserve_billing_outbox_backlog", "ponyserve_billing_outbox_oldest_age_seconds",
        "ponyserve_webhook_deliveries_pending", "ponyserve_webhook_attempts_total", "ponyserve_license_usage_ratio",
        "ponyserve_license_image_cap", "ponyserve_license_warning_threshold", "ponyserve_moderation_blocks_total",
        "ponyserve_build_info",
    }
    assert wanted - queried == set()
    titles = {p["title"] for p in _dashboard()["panels"] if p["type"] == "row"}
    assert {"HTTP", "Queue and jobs", "Workers and GPUs", "Billing", "Partner webhooks", "Licences",
            "Moderation"} <= titles
