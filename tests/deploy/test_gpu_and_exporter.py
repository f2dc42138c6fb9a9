"""The worker's GPU gauges (NVML, when there is one) and its small metrics/probe server; the fleet's
per-worker state gauge."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import fake_nvml
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.observability.exporter import metrics_token_matches, start_metrics_server
from app.observability.fleet import FleetCollector, FleetSnapshot
from app.observability.gpu import gpu_collector, register_gpu_metrics

GPU_NAMES = {"ponyserve_gpu_memory_used_bytes", "ponyserve_gpu_memory_total_bytes", "ponyserve_gpu_utilization_ratio"}


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_without_nvml_there_are_no_gpu_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    # No nvidia-ml-py installed: importing pynvml fails.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    registry = CollectorRegistry()
    assert register_gpu_metrics("cuda:0", "w1", registry=registry) is None
    assert not any(name.startswith("ponyserve_gpu") for name, _ in _samples(registry))
    # nvidia-ml-py installed but no driver (its nvmlInit raises): the same.
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.module(init_fails=True))
    assert register_gpu_metrics("cuda:0", "w1", registry=registry) is None
    assert b"ponyserve_gpu" not in generate_latest(registry)


def test_a_cpu_worker_does_not_even_look_for_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml.module()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert gpu_collector("cpu", "w1") is None
    assert gpu_collector("mps", "w1") is None
    assert nvml.calls == []  # type: ignore[attr-defined]


def test_the_gauges_read_the_workers_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.module())
    registry = CollectorRegistry()
    assert register_gpu_metrics("cuda:1", "host-a-cuda:1-1234", registry=registry, environ={}) is not None
    labels = (("device", "cuda:1"), ("worker", "host-a-cuda:1-1234"))
    samples = _samples(registry)
    gpu = fake_nvml.GPUS[1]
    assert samples[("ponyserve_gpu_memory_used_bytes", labels)] == gpu["used"]
    assert samples[("ponyserve_gpu_memory_total_bytes", labels)] == gpu["total"]
    assert samples[("ponyserve_gpu_utilization_ratio", labels)] == pytest.approx(gpu["util"] / 100)
    assert {name for name, _ in samples if name.startswith("ponyserve_gpu")} == GPU_NAMES


@pytest.mark.parametrize(("device", "visible", "expected"), [
    ("cuda", "1", 1), ("cuda:1", "1,0", 0), ("cuda:0", "GPU-bbbb", 1), ("cuda:1", " GPU-bbbb , GPU-aaaa ", 0),
])
def test_cuda_visible_devices_maps_torchs_numbering_to_nvmls(monkeypatch: pytest.MonkeyPatch, device: str,
                                                             visible: str, expected: int) -> None:
    # torch's cuda:N is the N-th entry of CUDA_VISIBLE_DEVICES, an NVML index or a GPU UUID.
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.module())
    registry = CollectorRegistry()
    register_gpu_metrics(device, "w", registry=registry, environ={"CUDA_VISIBLE_DEVICES": visible})
    used = [v for (name, _), v in _samples(registry).items() if name == "ponyserve_gpu_memory_used_bytes"]
    assert used == [fake_nvml.GPUS[expected]["used"]]


def test_a_gpu_nvml_cannot_find_or_a_query_that_fails_never_breaks_the_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.module())
    assert gpu_collector("cuda:7", "w", environ={}) is None
    assert gpu_collector("cuda:1", "w", environ={"CUDA_VISIBLE_DEVICES": "0"}) is None
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.module(utilization_fails=True))  # MIG slices
    registry = CollectorRegistry()
    register_gpu_metrics("cuda:0", "w", registry=registry, environ={})
    names = {name for name, _ in _samples(registry)}
    assert "ponyserve_gpu_memory_used_bytes" in names and "ponyserve_gpu_utilization_ratio" not in names


def test_the_metrics_token_is_checked_like_the_apis() -> None:
    token = SecretStr("s3cret")
    assert metrics_token_matches(None, None)
    assert metrics_token_matches(token, "Bearer s3cret") and metrics_token_matches(token, "bearer  s3cret ")
    for header in (None, "", "Bearer", "Bearer s3cre", "Basic czNjcmV0", "s3cret", "Bearer s3cret2"):
        assert not metrics_token_matches(token, header), header


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    state = ["starting"]
    registry = CollectorRegistry()
    Counter("ponyserve_probe_total", "A counter only this registry has.", registry=registry).inc(3)
    srv = start_metrics_server("127.0.0.1", 0, token=SecretStr("tok"), state=lambda: state[0], registry=registry)
    try:
        yield f"http://127.0.0.1:{srv.port}", state
    finally:
        srv.close()


def test_the_worker_server_guards_metrics_and_answers_probes(server: tuple[str, list[str]]) -> None:
    url, state = server
    with httpx.Client(base_url=url, timeout=5) as c:
        refused = c.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Bearer realm="ponyserve"'
        assert refused.json()["error"]["code"] == "invalid_metrics_token"
        assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = c.get("/metrics", headers={"Authorization": "Bearer tok"})
        assert ok.status_code == 200 and "ponyserve_probe_total 3.0" in ok.text
        assert ok.headers["content-type"].startswith("text/plain")
        assert c.get("/healthz").json() == {"status": "ok"}
        # Not ready while it loads its models or drains: a rollout waits, a drain stops counting it.
        for current, code in (("starting", 503), ("ready", 200), ("busy", 200), ("draining", 503), ("failed", 503)):
            state[0] = current
            r = c.get("/readyz")
            assert (r.status_code, r.json()["state"]) == (code, current)
        assert c.get("/other").status_code == 404


def test_a_port_in_use_is_an_error_unless_a_supervisor_may_take_the_next() -> None:
    first = start_metrics_server("127.0.0.1", 0, token=None, state=lambda: "ready")
    try:
        with pytest.raises(OSError):
            start_metrics_server("127.0.0.1", first.port, token=None, state=lambda: "ready")
        second = start_metrics_server("127.0.0.1", first.port, token=None, state=lambda: "ready", tries=16)
        try:
            assert first.port < second.port < first.port + 16
            assert httpx.get(f"http://127.0.0.1:{second.port}/healthz").status_code == 200
        finally:
            second.close()
    finally:
        first.close()


def test_each_worker_reports_exactly_one_state() -> None:
    snapshot = FleetSnapshot()
    snapshot.worker_states = {"gpu-0": "busy", "gpu-1": "ready", "gpu-2": "hibernating"}
    registry = CollectorRegistry()
    registry.register(FleetCollector(snapshot))
    samples = {labels: v for (name, labels), v in _samples(registry).items() if name == "ponyserve_worker_state"}
    by_worker: dict[str, dict[str, float]] = {}
    for labels, value in samples.items():
        d = dict(labels)
        by_worker.setdefault(d["worker"], {})[d["state"]] = value
    assert by_worker["gpu-0"]["busy"] == 1 and sum(by_worker["gpu-0"].values()) == 1
    assert set(by_worker["gpu-0"]) == {"starting", "ready", "busy", "draining", "stopped", "failed"}
    # A state this release does not know still shows (a newer worker during a rollout).
    assert by_worker["gpu-2"]["hibernating"] == 1 and sum(by_worker["gpu-2"].values()) == 1
