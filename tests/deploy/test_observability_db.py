"""Database-backed operations signals on a database of their own: the webhook backlog gauges,
readiness with and without workers, and ponyserve_database_up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from harness import LiveServer, make_settings, start_server
from sqlalchemy import update

import app.models  # noqa: F401  (every table the rows below point to)
from app.accounts.service import create_account
from app.db import Database
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.observability import endpoints
from app.observability.backlog import WebhookBacklog
from app.observability.fleet import FleetSnapshot
from app.observability.metrics import DatabaseUp
from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookMessage


@pytest.fixture(scope="module")
def own_db(pg_factory) -> str:  # type: ignore[no-untyped-def]
    return pg_factory()


@pytest.fixture(scope="module")
def workerless(own_db: str, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_settings(own_db, tmp_path_factory.mktemp("ops"), demo_model_dir,
                                        webhook_poll_seconds=3600), embedded_worker=False)
    yield server
    server.stop()


async def test_the_backlog_tells_due_deliveries_from_scheduled_ones(own_db: str) -> None:
    db = Database(own_db, pool_size=1)
    now = utcnow()
    try:
        async with db.unit_of_work() as session:
            account = await create_account(session, name="backlog")
            endpoint = WebhookEndpoint(id=new_id("we"), account_id=account.id, url="https://hooks.example.net/x",
                                       secret="whsec_x", created_at=now)
            session.add(endpoint)
            await session.flush()

            async def delivery(job: str, seq: int, status: DeliveryStatus, due_in: float) -> None:
                message = WebhookMessage(id=new_id("msg"), account_id=account.id, job_id=job, job_seq=seq,
                                         type="generation.succeeded", body="{}", created_at=now)
                session.add(message)
                await session.flush()  # no ORM relationship orders the two inserts
                session.add(WebhookDelivery(id=new_id("wd"), message_id=message.id, endpoint_id=endpoint.id,
                                            job_id=job, job_seq=seq, status=status,
                                            next_attempt_at=now + timedelta(seconds=due_in), created_at=now))

            await delivery("job_a", 1, DeliveryStatus.PENDING, -100)  # due for 100 s
            await delivery("job_b", 1, DeliveryStatus.PENDING, 300)  # its retry is in 5 minutes
            await delivery("job_b", 2, DeliveryStatus.PENDING, -400)  # due, but job_b's first message goes first
            await delivery("job_c", 1, DeliveryStatus.PENDING, -30)
            await delivery("job_d", 1, DeliveryStatus.SUCCEEDED, -900)
            await delivery("job_e", 1, DeliveryStatus.FAILED, -900)
        backlog = WebhookBacklog()
        async with db.unit_of_work() as session:
            await backlog.refresh(session, now)
        assert backlog.pending == {"due": 2, "scheduled": 2}
        assert backlog.oldest_due_age_seconds == pytest.approx(100, abs=0.01)
        # Once the held-back message's predecessor is delivered, it is the most overdue.
        async with db.unit_of_work() as session:
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == "job_b",
                                                                WebhookDelivery.job_seq == 1)
                                  .values(status=DeliveryStatus.SUCCEEDED))
            await backlog.refresh(session, now)
        assert backlog.pending == {"due": 3, "scheduled": 0}
        assert backlog.oldest_due_age_seconds == pytest.approx(400, abs=0.01)
    finally:
        await db.dispose()


def test_readiness_can_leave_workers_out(workerless: LiveServer) -> None:
    with httpx.Client(base_url=workerless.url, timeout=10) as c:
        strict = c.get("/readyz")
        assert strict.status_code == 503 and strict.json()["error"]["code"] == "no_worker"
        assert c.get("/readyz?workers=required").status_code == 503
        relaxed = c.get("/readyz?workers=optional")
        assert relaxed.status_code == 200, relaxed.text
        assert relaxed.json() == {"status": "ready", "database": True, "workers": {}}
        bad = c.get("/readyz?workers=sometimes")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "workers"
        params = c.get("/openapi.json").json()["paths"]["/readyz"]["get"]["parameters"]
        assert [p["name"] for p in params] == ["workers"]


async def test_database_up_follows_the_refresh(own_db: str) -> None:
    # A gauge of its own: the session's other test servers keep setting the process-wide one.
    gauge = DatabaseUp()
    assert list(gauge.collect()) == []  # absent until the first check

    async def one_round(url: str) -> None:
        db = Database(url, pool_size=1)
        ctx = SimpleNamespace(db=db, fleet=FleetSnapshot(), settings=SimpleNamespace(worker_stale_seconds=15))
        task = asyncio.create_task(endpoints.refresh_metrics_loop(ctx, 3600, gauge))  # type: ignore[arg-type]
        try:
            for _ in range(200):
                if gauge.value is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await db.dispose()

    await one_round("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert gauge.value == 0.0
    [family] = list(gauge.collect())
    assert family.name == "ponyserve_database_up" and family.samples[0].value == 0.0
    gauge.value = None
    await one_round(own_db)
    assert gauge.value == 1.0
