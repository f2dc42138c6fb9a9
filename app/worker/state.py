"""The states a worker reports in its heartbeat (what /readyz and /metrics show)."""

from enum import StrEnum


class WorkerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
