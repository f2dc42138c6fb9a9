"""A stand-in for ``pynvml`` (nvidia-ml-py): two GPUs, as NVML on a host with two H200s would report them."""

from __future__ import annotations

import types
from dataclasses import dataclass


class NVMLError(Exception):
    pass


@dataclass
class _Memory:
    total: int
    used: int
    free: int


@dataclass
class _Rates:
    gpu: int
    memory: int


GPUS = {
    0: {"uuid": "GPU-aaaa", "total": 150_000_000_000, "used": 30_000_000_000, "util": 87},
    1: {"uuid": "GPU-bbbb", "total": 150_000_000_000, "used": 90_000_000_000, "util": 12},
}


def module(*, init_fails: bool = False, utilization_fails: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def by_index(index: int) -> int:
        if index not in GPUS:
            raise NVMLError("Invalid Argument")
        return index

    def by_uuid(uuid: str) -> int:
        for index, gpu in GPUS.items():
            if gpu["uuid"] == uuid:
                return index
        raise NVMLError("Not Found")

    def memory(handle: int) -> _Memory:
        gpu = GPUS[handle]
        return _Memory(total=gpu["total"], used=gpu["used"], free=gpu["total"] - gpu["used"])

    def utilization(handle: int) -> _Rates:
        if utilization_fails:
            raise NVMLError("Not Supported")
        return _Rates(gpu=GPUS[handle]["util"], memory=0)

    nvml.NVMLError = NVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = by_index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByUUID = by_uuid  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    nvml.calls = calls  # type: ignore[attr-defined]
    return nvml
