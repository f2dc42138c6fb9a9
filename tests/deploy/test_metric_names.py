"""Every series the Grafana dashboard, the Prometheus rules and the KEDA trigger query is one the
running service exports, after some traffic; and every exported name follows the conventions
(ponyserve_ prefix, base units, bounded labels).

Recording-rule names are resolved to the series their expressions read. The GPU gauges come from
the worker process's own /metrics on a GPU host; here that server runs with a stand-in NVML module."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fake_nvml
import httpx
import pytest
from deploy_files import queried_metric_names
from harness import Customer, LiveServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.observability.exporter import start_metrics_server
from app.observability.gpu import register_gpu_metrics

# Series this test's traffic cannot produce a sample of: only their declaration (HELP/TYPE) is
# required in the exposition. Each needs an event a test server does not have.
EVENT_ONLY = {
    "ponyserve_moderation_withheld_images_total": "an output classifier withholding an image",
    "ponyserve_moderation_review_decisions_total": "a moderator deciding on a withheld image",
    "ponyserve_billing_webhook_events_total": "a Stripe-signed webhook event",
}
GPU_NAMES = {"ponyserve_gpu_memory_used_bytes", "ponyserve_gpu_memory_total_bytes", "ponyserve_gpu_utilization_ratio"}
# Labels whose values grow with traffic or name a customer: never on a metric.
UNBOUNDED_LABELS = {"id", "job_id", "job", "key", "key_id", "account", "account_id", "request_id", "image_id",
                    "prompt", "user", "url", "endpoint_id", "delivery_id"}
NOT_BASE_UNITS = ("_ms", "_milliseconds", "_minutes", "_hours", "_percent", "_kb", "_mb", "_gb", "_kilobytes",
                  "_megabytes")
TOKEN = "scrape-" + secrets.token_hex(4)


class Exposition:
    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))
        self.samples = [s for f in self.families for s in f.samples]
        self.sampled = {s.name for s in self.samples}
        self.declared = set(self.sampled)
        for f in self.families:
            self.declared |= {"counter": {f"{f.name}_total"}, "histogram": {f"{f.name}_bucket", f"{f.name}_sum",
                                                                           f"{f.name}_count"},
                              "summary": {f"{f.name}_sum", f"{f.name}_count"}}.get(f.type, {f.name})

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items())


class _Receiver(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def guarded(live: LiveServer) -> Iterator[LiveServer]:
    """The shared server with its metrics token set and private webhook targets allowed, as production
    would have the one and a test receiver needs the other; both put back afterwards."""
    live.settings.metrics_token = SecretStr(TOKEN)
    live.settings.webhook_allow_private = True
    try:
        yield live
    finally:
        live.settings.metrics_token = None
        live.settings.webhook_allow_private = False


def _scrape(client: httpx.Client) -> Exposition:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return Exposition(r.text)


def _traffic(client: httpx.Client, customer: Customer, admin_key: str, hook_url: str) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {admin_key}"}
    hook = client.post("/v1/webhooks", json={"url": hook_url, "events": ["generation.succeeded"]},
                       headers=customer.headers)
    assert hook.status_code == 201, hook.text
    licence = f"probe-{secrets.token_hex(3)}"
    made = client.post("/admin/licenses", headers=admin, json={
        "id": licence, "name": "Metrics probe", "monthly_image_cap": 1000, "annual_revenue_cap_usd": 100000})
    assert made.status_code == 201, made.text
    image = client.post("/v1/images/generations", headers=customer.headers,
                        json={"prompt": "a pony", "size": "64x64", "steps": 1})
    assert image.status_code == 200, image.text
    assert client.get("/v1/generations/gen_nothing_here", headers=customer.headers).status_code == 404
    # A built-in blocklist term: refused, counted, and no strike against the account.
    blocked = client.post("/v1/images/generations", headers=customer.headers,
                          json={"prompt": "a snuff film", "size": "64x64", "steps": 1})
    assert blocked.json()["error"]["code"] == "content_policy_violation", blocked.text
    assert client.post("/webhooks/stripe", content=b"{}").status_code == 400
    return {"license": licence}


def test_everything_the_dashboard_rules_and_autoscaler_query_is_exported(
        guarded: LiveServer, client: httpx.Client, customer: Customer, admin_key: str, receiver: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = _scrape(client)
    made = _traffic(client, customer, admin_key, receiver)
    deadline = time.monotonic() + 30
    while True:
        api = _scrape(client)
        # The background refresh (every 0.2 s here) fills the database-backed gauges; the partner
        # webhook goes out within the dispatcher's poll.
        ready = (api.value("ponyserve_license_image_cap", license=made["license"]) == 1000
                 and api.value("ponyserve_worker_state") >= 1 and "ponyserve_database_up" in api.sampled
                 and api.value("ponyserve_webhook_attempts_total", outcome="succeeded") >= 1)
        if ready:
            break
        assert time.monotonic() < deadline, "the traffic's metrics never appeared"
        time.sleep(0.2)
    # Observed at the claim: the wait histogram counted this job.
    assert api.value("ponyserve_queue_wait_seconds_count", model="demo") \
        >= before.value("ponyserve_queue_wait_seconds_count", model="demo") + 1
    assert api.value("ponyserve_build_info") >= 1

    # A GPU worker's own /metrics, NVML answering.
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.module())
    registry = CollectorRegistry()
    assert register_gpu_metrics("cuda:0", "gpu-host-cuda:0-1", registry=registry, environ={}) is not None
    server = start_metrics_server("127.0.0.1", 0, token=SecretStr(TOKEN), state=lambda: "ready", registry=registry)
    try:
        worker = Exposition(httpx.get(f"http://127.0.0.1:{server.port}/metrics",
                                      headers={"Authorization": f"Bearer {TOKEN}"}).text)
    finally:
        server.close()
    assert worker.sampled >= GPU_NAMES

    queried = queried_metric_names()
    assert queried >= GPU_NAMES and len(queried) > 30
    assert {n for n in queried if not n.startswith("ponyserve_")} == set()
    missing = {n for n in queried - GPU_NAMES if n not in api.sampled and not (n in EVENT_ONLY and n in api.declared)}
    assert missing == set(), "queried but not exported"
    # (Whether an event-only series has samples depends on which tests ran before in this process: the
    # registry is process-wide, so only their declaration is asserted.)


def test_exported_names_follow_the_conventions(live: LiveServer, client: httpx.Client) -> None:
    api = Exposition(client.get("/metrics").text)
    ours = [f for f in api.families if f.name.startswith("ponyserve_")]
    assert len(ours) > 30
    for family in ours:
        assert not family.name.endswith(NOT_BASE_UNITS), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        for sample in family.samples:
            assert not set(sample.labels) & UNBOUNDED_LABELS, (family.name, sample.labels)
    # Durations are seconds: every histogram whose name speaks of time says so.
    for family in ours:
        if family.type == "histogram" and any(w in family.name for w in ("duration", "wait", "time")):
            assert family.name.endswith("_seconds"), family.name
