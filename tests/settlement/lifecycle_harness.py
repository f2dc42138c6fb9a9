"""Plumbing for the lifecycle fault-injection suite: a worker in its own thread (as good as a
separate process for the database: its own engine, listener and event loop), faults armed at
named points of the worker's path, and the invariants every scenario must leave true."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.db import Database
from app.queue import lifecycle
from app.queue import repository as queue
from app.queue.notify import JobEvents, PgListener
from app.runtime.registry import ModelRegistry
from app.settlement import service as settlement
from app.storage.local import LocalImageStore
from app.worker import worker as worker_module
from app.worker.worker import QueueWorker


class Crash(BaseException):
    """The worker dies where this is raised: no ``except Exception`` in it can catch it, so its loop,
    heartbeat and give-back stop there, as if the process had been killed."""


class ThreadWorker:
    """``ponyserve worker`` in a thread: its own event loop, engine and NOTIFY listener."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: QueueWorker | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._ready.wait(60), "worker thread did not start"

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # a Crash ends the thread: that is the point
            self.error = exc

    async def _run(self) -> None:
        db = Database(self.settings.database_url, pool_size=3)
        events = JobEvents()
        listener = PgListener(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                              events)
        listener.start()
        registry = ModelRegistry(self.settings.model_specs(), "cpu")
        self._worker = QueueWorker(db, self.settings, registry, events,
                                   LocalImageStore(self.settings.resolved_images_dir),
                                   max_batch_images=self.settings.max_batch_images)
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._worker.run()
        finally:
            await listener.stop()
            await db.dispose()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self.alive and self._loop is not None and self._worker is not None:
            self._loop.call_soon_threadsafe(self._worker.stop)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "worker did not stop"


def db_error() -> OperationalError:
    return OperationalError("injected", {}, Exception("server closed the connection unexpectedly"))


# Where a fault can be injected: (object, attribute, when). "before" raises instead of calling the
# function; "after" calls it and then raises, so a transaction's work is done and its commit fails.
POINTS: dict[str, tuple[Any, str, str]] = {
    "claim": (queue, "claim_batch", "before"),
    "progress": (queue, "set_progress", "before"),
    "start_delivery": (lifecycle, "start_delivery", "after"),
    "encoding": (worker_module, "encode_image", "before"),
    "storage": (LocalImageStore, "put", "before"),
    "settlement": (settlement, "deliver", "after"),
    "heartbeat": (lifecycle, "renew_leases", "before"),
}


@dataclass
class Faults:
    """Arms one fault (a database error or a crash) at one point; it fires once, on the first call."""

    monkeypatch: pytest.MonkeyPatch
    fired: list[str] = field(default_factory=list)

    def arm(self, point: str, kind: str, *, on_call: Callable[[], None] | None = None) -> None:
        owner, name, when = POINTS[point]
        original = getattr(owner, name)
        state = {"armed": True}

        def fire() -> None:
            if on_call is not None:
                on_call()
            if kind == "db":
                raise db_error()
            if kind == "crash":
                raise Crash(point)

        def should_fire() -> bool:
            if state["armed"]:
                state["armed"] = False
                self.fired.append(point)
                return True
            return False

        if asyncio.iscoroutinefunction(original):
            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                if when == "before" and should_fire():
                    fire()
                result = await original(*args, **kwargs)
                if when == "after" and should_fire():
                    fire()
                return result
            self.monkeypatch.setattr(owner, name, wrapped_async)
        else:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                if when == "before" and should_fire():
                    fire()
                result = original(*args, **kwargs)
                if when == "after" and should_fire():
                    fire()
                return result
            self.monkeypatch.setattr(owner, name, wrapped)


def wait_all_terminal(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            open_jobs = conn.execute(text(
                "SELECT id, status, attempts, lease_expires_at FROM jobs "
                "WHERE status NOT IN ('succeeded', 'failed', 'cancelled')")).all()
        if not open_jobs:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not terminal after {timeout:.0f}s: {open_jobs}")
        time.sleep(0.2)


_ONE_VALUE_CHECKS = {
    "quota images still reserved": "SELECT coalesce(sum(reserved), 0) FROM quota_counters",
    "licence images still reserved": "SELECT coalesce(sum(reserved), 0) FROM license_usage_daily",
    "reservations still held": "SELECT count(*) FROM jobs WHERE reservation_state = 'held'",
    "outputs of jobs that did not succeed":
        "SELECT count(*) FROM job_outputs o JOIN jobs j ON j.id = o.job_id WHERE j.status <> 'succeeded'",
    "ledger rows of jobs that did not succeed":
        "SELECT count(*) FROM usage_ledger l JOIN jobs j ON j.id = l.job_id WHERE j.status <> 'succeeded'",
}


def check_invariants(engine: Engine) -> None:
    """What every scenario must leave behind, whatever failed and whenever a cancel came."""
    with engine.connect() as conn:
        for what, sql in _ONE_VALUE_CHECKS.items():
            assert conn.execute(text(sql)).scalar_one() == 0, what
        charged = dict(conn.execute(text(
            "SELECT j.account_id, count(*) FROM job_outputs o JOIN jobs j ON j.id = o.job_id "
            "WHERE j.status = 'succeeded' AND o.charged GROUP BY j.account_id")).all())
        used = {a: n for a, n in conn.execute(text(
            "SELECT scope_id, sum(used) FROM quota_counters WHERE scope = 'account' AND period = 'month' "
            "GROUP BY scope_id")).all() if n}
        assert used == charged, "an account's used images are not the images of its succeeded jobs"
        delivered = sum(charged.values())
        ledger = conn.execute(text("SELECT count(*) FROM usage_ledger")).scalar_one()
        assert ledger == delivered, "ledger rows are not the delivered images"
        licence_used = conn.execute(text("SELECT coalesce(sum(used), 0) FROM license_usage_daily")).scalar_one()
        assert licence_used == delivered, "the licence did not count exactly the delivered images"
        billable = conn.execute(text(
            "SELECT count(*) FROM usage_ledger l JOIN accounts a ON a.id = l.account_id "
            "WHERE l.plan_paid AND a.stripe_customer_id IS NOT NULL")).scalar_one()
        outbox = conn.execute(text("SELECT count(*) FROM billing_outbox")).scalar_one()
        assert outbox == billable, "billing outbox rows are not the paid plans' ledger rows"
        duplicated = conn.execute(text(
            "SELECT count(*) FROM (SELECT job_id, index FROM job_outputs GROUP BY job_id, index "
            "HAVING count(*) > 1) d")).scalar_one()
        assert duplicated == 0, "an image was delivered twice"
