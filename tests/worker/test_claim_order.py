"""Which queued jobs a worker claims: priority, then its loaded models, then age; companions by batch key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.accounts import service as accounts
from app.db import Database
from app.kit.ids import new_id
from app.queue import repository as queue
from app.queue.models import Job

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
AFFINITY = timedelta(seconds=2)


class Queue:
    def __init__(self, db: Database, account_id: str, key_id: str) -> None:
        self.db, self.account_id, self.key_id = db, account_id, key_id

    async def add(self, model: str, *, age: float, priority: int = 0, steps: int = 20, n: int = 1) -> str:
        job = Job(id=new_id("gen"), account_id=self.account_id, api_key_id=self.key_id, model=model,
                  prompt="p", revised_prompt="p", width=64, height=64, steps=steps, guidance_scale=5.0,
                  sampler="Euler", seed=1, n=n, output_format="png", priority=priority,
                  batch_key=f"{model}|64x64|{steps}", created_at=NOW - timedelta(seconds=age))
        async with self.db.unit_of_work() as session:
            await queue.insert_job(session, job)
        return job.id

    async def claim(self, *, loaded: list[str], max_images: int = 1) -> list[str]:
        async with self.db.unit_of_work() as session:
            jobs = await queue.claim_batch(session, worker_id="w1", models=["a", "b", "c"], max_images=max_images,
                                           now=NOW, lease_until=NOW + timedelta(minutes=2), loaded=loaded,
                                           affinity=AFFINITY)
        return [j.id for j in jobs]


async def _with_queue(url: str, scenario) -> None:  # type: ignore[no-untyped-def]
    db = Database(url, pool_size=1)
    try:
        async with db.unit_of_work() as s:
            account = await accounts.create_account(s, name="claims", plan_code="internal")
            key, _ = await accounts.create_key(s, account_id=account.id)
        await scenario(Queue(db, account.id, key.id))
    finally:
        await db.dispose()


async def _loaded_models_first(q: Queue) -> None:
    older_unloaded = await q.add("b", age=1.0)
    loaded = await q.add("a", age=0.5)
    assert await q.claim(loaded=["a"]) == [loaded]
    # Nothing of the loaded model left: the worker takes the other model's job.
    assert await q.claim(loaded=["a"]) == [older_unloaded]


async def _long_waiting_jobs_are_not_starved(q: Queue) -> None:
    waited = await q.add("b", age=AFFINITY.total_seconds() + 1)
    await q.add("a", age=0.1)
    assert await q.claim(loaded=["a"]) == [waited]


async def _priority_outranks_affinity(q: Queue) -> None:
    await q.add("a", age=5.0)
    urgent = await q.add("b", age=0.1, priority=10)
    assert await q.claim(loaded=["a"]) == [urgent]


async def _fifo_without_loaded_models(q: Queue) -> None:
    first = await q.add("b", age=1.0)
    await q.add("a", age=0.5)
    assert await q.claim(loaded=[]) == [first]


async def _companions_share_the_batch_key(q: Queue) -> None:
    head = await q.add("a", age=3.0)
    await q.add("a", age=2.0, steps=30)
    mate = await q.add("a", age=1.0, n=2)
    too_big = await q.add("a", age=0.5, n=3)
    assert await q.claim(loaded=["a"], max_images=4) == [head, mate]
    assert too_big not in await q.claim(loaded=["a"], max_images=2)


SCENARIOS = [_loaded_models_first, _long_waiting_jobs_are_not_starved, _priority_outranks_affinity,
             _fifo_without_loaded_models, _companions_share_the_batch_key]


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__.strip("_"))
def test_claim_order(dialect: str, scenario, pg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if dialect == "postgres":
        url = pg_factory()
    else:
        from app.migrate import upgrade_head

        url = f"sqlite+aiosqlite:///{tmp_path / 'claims.db'}"
        upgrade_head(url)
    asyncio.run(_with_queue(url, scenario))
