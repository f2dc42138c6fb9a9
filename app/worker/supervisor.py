"""One worker child per device; a child that dies is restarted (its jobs' leases lapse and
the sweeper retries them once), SIGTERM is passed on so every child drains."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger("ponyserve.supervisor")


def _spawn(device: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--device", device])


def supervise(devices: list[str], *, max_backoff: float = 30.0) -> int:
    # Keyed by slot, not device name: "cpu,cpu" asks for two children on one device.
    children = {slot: _spawn(d) for slot, d in enumerate(devices)}
    backoff = dict.fromkeys(children, 1.0)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while True:
        time.sleep(0.5)
        if stopping:
            for child in children.values():
                child.wait()
            return 0
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            device = devices[slot]
            log.error("worker for %s exited with %s; restarting in %.0fs", device, code, backoff[slot])
            time.sleep(backoff[slot])
            backoff[slot] = min(backoff[slot] * 2, max_backoff)
            children[slot] = _spawn(device)
