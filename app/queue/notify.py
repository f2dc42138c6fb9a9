"""Wake-ups: "a job changed" and "work is queued".

Inside one process a ``JobEvents`` hub fans changes out to waiters (synchronous
requests, SSE streams, the embedded worker). Across processes Postgres
``NOTIFY`` carries the same signals (sent inside the writing transaction, so
they arrive only once it commits) and a ``PgListener`` feeds them into the
local hub. Waiters always re-read the database after a wake-up, so a lost or
duplicated signal costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("ponyserve.queue.notify")

JOB_CHANNEL = "ponyserve_job"
WORK_CHANNEL = "ponyserve_work"


# A progress notification's payload is "<job id>:progress"; any other change is the bare id.
PROGRESS_SUFFIX = ":progress"


class JobSubscription:
    """One waiter's interest in one job; registered before the waiter reads the row, so a change
    committed between that read and the wait still wakes it."""

    def __init__(self, *, progress: bool) -> None:
        self.progress = progress
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Sleeps until woken or ``timeout``; True if woken (a wake-up before the call counts)."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()


class JobEvents:
    def __init__(self) -> None:
        self._subscriptions: dict[str, set[JobSubscription]] = defaultdict(set)
        self._work = asyncio.Event()

    def job_changed(self, job_id: str, *, progress: bool = False) -> None:
        """Wakes the job's waiters; a progress-only change wakes only those that follow progress
        (a synchronous request waiting for the result has no use for it)."""
        for subscription in self._subscriptions.get(job_id, ()):
            if subscription.progress or not progress:
                subscription.wake()

    def wake_all(self) -> None:
        """Every waiter re-reads: notifications may have been missed (a listener reconnected)."""
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.wake()

    def work_available(self) -> None:
        self._work.set()

    @contextlib.contextmanager
    def subscribe(self, *job_ids: str, progress: bool = True) -> Iterator[JobSubscription]:
        """One subscription woken by a change to any of ``job_ids``, for the ``with`` block."""
        subscription = JobSubscription(progress=progress)
        for job_id in job_ids:
            self._subscriptions[job_id].add(subscription)
        try:
            yield subscription
        finally:
            for job_id in job_ids:
                subscriptions = self._subscriptions.get(job_id)
                if subscriptions is not None:
                    subscriptions.discard(subscription)
                    if not subscriptions:
                        del self._subscriptions[job_id]

    async def wait_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._work.wait()
        self._work.clear()


async def publish_job_changed(session: AsyncSession, job_id: str, *, progress: bool = False) -> None:
    """Queues a cross-process notification; delivered when the session's transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        payload = job_id + PROGRESS_SUFFIX if progress else job_id
        await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": JOB_CHANNEL, "p": payload})


async def publish_work(session: AsyncSession, model: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": WORK_CHANNEL, "p": model})


class PgListener:
    """LISTENs on one dedicated connection and feeds the local hub; reconnects with backoff."""

    def __init__(self, conninfo: str, events: JobEvents) -> None:
        self._conninfo = conninfo
        self._events = events
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {JOB_CHANNEL}")
                    await conn.execute(f"LISTEN {WORK_CHANNEL}")
                    self.connected.set()
                    delay = 0.5
                    # Anything committed while we were disconnected is found by the waiters' re-reads.
                    self._events.work_available()
                    self._events.wake_all()
                    async for note in conn.notifies():
                        if note.channel == JOB_CHANNEL:
                            progress = note.payload.endswith(PROGRESS_SUFFIX)
                            job_id = note.payload.removesuffix(PROGRESS_SUFFIX)
                            self._events.job_changed(job_id, progress=progress)
                        else:
                            self._events.work_available()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning("notification listener lost its connection (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
