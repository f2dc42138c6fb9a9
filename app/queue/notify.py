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

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("ponyserve.queue.notify")

JOB_CHANNEL = "ponyserve_job"
WORK_CHANNEL = "ponyserve_work"


class JobEvents:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._work = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def job_changed(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def work_available(self) -> None:
        self._work.set()

    def job_changed_threadsafe(self, job_id: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.job_changed, job_id)

    async def wait_job(self, job_id: str, timeout: float) -> bool:
        """Waits until the job is reported changed or the timeout passes; True if woken."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]

    async def wait_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._work.wait()
        self._work.clear()


async def publish_job_changed(session: AsyncSession, job_id: str) -> None:
    """Queues a cross-process notification; delivered when the session's transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": JOB_CHANNEL, "p": job_id})


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
                    async for note in conn.notifies():
                        if note.channel == JOB_CHANNEL:
                            self._events.job_changed(note.payload)
                        else:
                            self._events.work_available()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning("notification listener lost its connection (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
