"""One worker child per device; a child that dies is restarted, SIGTERM is passed on so every
child drains.

Each child gets a worker id from the supervisor (a new one per start), so when a child exits
unasked the supervisor gives its running jobs back at once — retried once, then failed, never
charged — instead of leaving them until their lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from app.config import Settings
from app.db import Database
from app.kit.clock import utcnow
from app.worker.recovery import recover_jobs

log = logging.getLogger("ponyserve.supervisor")


class _Child:
    def __init__(self, device: str) -> None:
        self.worker_id = f"{socket.gethostname()}-{device}-{secrets.token_hex(4)}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--device", device, "--worker-id", self.worker_id]
        )


def _give_back_jobs(settings: Settings, worker_id: str) -> None:
    async def run() -> None:
        db = Database(settings.database_url, pool_size=1)
        try:
            await recover_jobs(db, now=utcnow(), worker_id=worker_id)
        finally:
            await db.dispose()

    try:
        asyncio.run(run())
    except Exception:
        # The database may be what killed the child; the lease sweeper is the fallback.
        log.exception("could not give back the jobs of worker %s; their leases will expire", worker_id)


def supervise(devices: list[str], settings: Settings, *, max_backoff: float = 30.0) -> int:
    # Keyed by slot, not device name: "cpu,cpu" asks for two children on one device.
    children = {slot: _Child(d) for slot, d in enumerate(devices)}
    backoff = dict.fromkeys(children, 1.0)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while True:
        time.sleep(0.5)
        if stopping:
            for child in children.values():
                child.process.wait()
            return 0
        for slot, child in list(children.items()):
            code = child.process.poll()
            if code is None:
                continue
            device = devices[slot]
            log.error("worker %s for %s exited with %s; restarting in %.0fs", child.worker_id, device, code,
                      backoff[slot])
            _give_back_jobs(settings, child.worker_id)
            time.sleep(backoff[slot])
            backoff[slot] = min(backoff[slot] * 2, max_backoff)
            children[slot] = _Child(device)
