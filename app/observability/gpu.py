"""GPU memory and utilisation gauges for the worker that drives a CUDA device, read through NVML.

NVML (``pynvml``, from the ``nvidia-ml-py`` package in the ``gpu`` extra) is imported lazily and
only by a worker on a ``cuda`` device: a CPU worker, or a host without the NVIDIA driver, simply
exports no GPU gauges. The values are read when Prometheus scrapes (an NVML query takes
microseconds), so they are as fresh as the scrape and cost nothing between scrapes.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("ponyserve.metrics")

LABELS = ["worker", "device"]


def _cuda_index(device: str) -> int | None:
    """0 for ``cuda``, N for ``cuda:N``, None for anything that is not a CUDA device."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return None
    if not index:
        return 0
    return int(index) if index.isdigit() else None


def _nvml_handle(nvml: ModuleType, index: int, environ: Mapping[str, str]) -> Any:
    """The NVML handle of the GPU that torch calls ``cuda:<index>``.

    torch numbers the devices CUDA_VISIBLE_DEVICES leaves visible, in that order; NVML sees every
    GPU of the host (or, in a container, those the runtime mounted), in PCI bus order, which is also
    CUDA's order under CUDA_DEVICE_ORDER=PCI_BUS_ID (the Dockerfile sets it)."""
    visible = [entry.strip() for entry in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    if not visible:
        return nvml.nvmlDeviceGetHandleByIndex(index)
    entry = visible[index]
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByUUID(entry)  # GPU-… or MIG-… identifiers


class GpuCollector(Collector):
    def __init__(self, nvml: ModuleType, handle: Any, *, worker: str, device: str) -> None:
        self.nvml = nvml
        self.handle = handle
        self.labels = [worker, device]

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("ponyserve_gpu_memory_used_bytes", "GPU memory in use (all processes).", labels=LABELS),
            GaugeMetricFamily("ponyserve_gpu_memory_total_bytes", "GPU memory installed.", labels=LABELS),
            GaugeMetricFamily("ponyserve_gpu_utilization_ratio",
                              "Fraction of the last sample period in which a kernel ran on the GPU.", labels=LABELS),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used, total, utilization = self._families()
        # A failed query (a GPU fallen off the bus, MIG slices without utilisation counters) leaves that
        # gauge without a value for this scrape; it must never fail the whole exposition.
        try:
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            used.add_metric(self.labels, float(memory.used))
            total.add_metric(self.labels, float(memory.total))
        except Exception as exc:
            log.debug("NVML memory query failed: %s", exc)
        try:
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            utilization.add_metric(self.labels, float(rates.gpu) / 100.0)
        except Exception as exc:
            log.debug("NVML utilisation query failed: %s", exc)
        yield from (used, total, utilization)


def gpu_collector(device: str, worker: str, *, environ: Mapping[str, str] | None = None) -> GpuCollector | None:
    """The collector for ``device``, or None where there is nothing to read: not a CUDA device,
    no NVML module, no driver, or no such GPU."""
    index = _cuda_index(device)
    if index is None:
        return None
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        log.info("nvidia-ml-py is not installed: no GPU gauges (install the 'gpu' extra)")
        return None
    try:
        nvml.nvmlInit()
        handle = _nvml_handle(nvml, index, os.environ if environ is None else environ)
    except Exception as exc:
        log.warning("NVML unavailable for %s, no GPU gauges: %s", device, exc)
        return None
    return GpuCollector(nvml, handle, worker=worker, device=device)


def register_gpu_metrics(device: str, worker: str, *, registry: CollectorRegistry = REGISTRY,
                         environ: Mapping[str, str] | None = None) -> GpuCollector | None:
    collector = gpu_collector(device, worker, environ=environ)
    if collector is not None:
        registry.register(collector)
    return collector
