"""Sends the webhook outbox: every process that runs a worker or an API also runs one dispatcher.

Dispatchers share the outbox through leases on delivery rows, so any number may run and a
restart loses nothing: a delivery leased by a process that died is taken again when its lease
runs out. A slow or dead receiver holds at most one of a dispatcher's slots (one attempt per
endpoint at a time, each bounded by the timeout, then the retry schedule spaces its attempts
out), so other partners' deliveries go on, and generation never waits for any of it: the
dispatcher is its own task, and the job's transaction only wrote rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from functools import partial

import httpx
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import Database
from app.kit.clock import utcnow
from app.webhooks import deliveries
from app.webhooks.metrics import WEBHOOK_ATTEMPTS
from app.webhooks.sender import new_client, post
from app.webhooks.signing import signed_headers
from app.webhooks.targets import TargetRefused, resolve

log = logging.getLogger("ponyserve.webhooks")

# Beyond the request timeout, how long a lease lasts (writing the outcome back).
LEASE_MARGIN_SECONDS = 10.0
# Finished deliveries stay in the delivery log this long; older ones are pruned every PRUNE_SECONDS.
LOG_RETENTION = timedelta(days=30)
PRUNE_SECONDS = 600.0


class WebhookDispatcher:
    def __init__(self, db: Database, settings: Settings, *, name: str = "dispatcher") -> None:
        self.db = db
        self.settings = settings
        self.name = name
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        # Endpoint id → its attempt in flight here.
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        client = new_client(self.settings.webhook_timeout_seconds, self.settings.webhook_concurrency)
        loop = asyncio.get_running_loop()
        last_prune = -PRUNE_SECONDS
        try:
            while not self._stopping.is_set():
                try:
                    if loop.time() - last_prune >= PRUNE_SECONDS:
                        last_prune = loop.time()
                        async with self.db.unit_of_work() as session:
                            await deliveries.prune(session, utcnow() - LOG_RETENTION)
                    await self._dispatch_round(client)
                except SQLAlchemyError as exc:
                    log.warning("webhook outbox unavailable: %s", str(exc).splitlines()[0][:300] if str(exc) else exc)
                except Exception:
                    log.exception("webhook dispatch round failed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.webhook_poll_seconds):
                        await self._wake.wait()
        finally:
            await self._finish_in_flight()
            await client.aclose()

    async def _dispatch_round(self, client: httpx.AsyncClient) -> None:
        free = self.settings.webhook_concurrency - len(self._in_flight)
        if free <= 0:
            return
        now = utcnow()
        until = now + timedelta(seconds=self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        async with self.db.unit_of_work() as session:
            ids = await deliveries.due(session, now, busy_endpoints=set(self._in_flight), limit=free)
        for delivery_id in ids:
            async with self.db.unit_of_work() as session:
                claimed = await deliveries.lease(session, delivery_id, now, until)
            if claimed is None or claimed.endpoint_id in self._in_flight:
                continue
            task = asyncio.create_task(self._attempt(client, claimed), name=f"webhook-{delivery_id}")
            self._in_flight[claimed.endpoint_id] = task
            task.add_done_callback(partial(self._done, claimed.endpoint_id))

    def _done(self, endpoint_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(endpoint_id, None)
        # A slot is free, and this endpoint's next message may be due already.
        self._wake.set()

    async def _attempt(self, client: httpx.AsyncClient, claimed: deliveries.Claimed) -> None:
        """One attempt at one delivery, its outcome written back; never raises (the lease covers a crash)."""
        try:
            try:
                target = await resolve(claimed.url, allow_private=self.settings.webhook_allow_private)
            except TargetRefused as exc:
                async with self.db.unit_of_work() as session:
                    await deliveries.given_up(session, claimed.delivery_id, utcnow(), status_code=None,
                                              error=f"target refused: {exc}")
                WEBHOOK_ATTEMPTS.labels("refused").inc()
                log.warning("webhook %s not sent: %s", claimed.delivery_id, exc)
                return
            sent_at = utcnow()
            outcome = await post(client, target, claimed.body,
                                 signed_headers(claimed.message_id, claimed.body, claimed.secrets, sent_at))
            now = utcnow()
            async with self.db.unit_of_work() as session:
                if outcome.ok:
                    assert outcome.status_code is not None
                    await deliveries.succeeded(session, claimed.delivery_id, now, outcome.status_code,
                                               outcome.duration_ms)
                elif outcome.gone:
                    await deliveries.given_up(session, claimed.delivery_id, now, status_code=410,
                                              error="HTTP 410: the receiver unsubscribed",
                                              duration_ms=outcome.duration_ms)
                    await deliveries.disable_endpoint(session, claimed.endpoint_id,
                                                      "The receiver answered 410 Gone.", now)
                else:
                    await deliveries.attempt_failed(session, claimed.delivery_id, now, status_code=outcome.status_code,
                                                    error=outcome.error or "failed", duration_ms=outcome.duration_ms,
                                                    schedule=self.settings.webhook_retry_schedule,
                                                    retry_after=outcome.retry_after)
            WEBHOOK_ATTEMPTS.labels("succeeded" if outcome.ok else "gone" if outcome.gone else "failed").inc()
        except SQLAlchemyError as exc:
            # The lease runs out and the attempt is made again: at least once, never lost.
            log.warning("webhook %s outcome not recorded: %s", claimed.delivery_id, str(exc).splitlines()[0][:300])
        except Exception:
            log.exception("webhook %s attempt failed", claimed.delivery_id)

    async def _finish_in_flight(self) -> None:
        """Gives attempts in flight up to the request timeout to finish; the rest are retried after their lease."""
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.webhook_timeout_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
