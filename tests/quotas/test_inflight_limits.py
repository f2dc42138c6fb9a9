"""In-flight limits through the HTTP API, on Postgres and on the embedded SQLite database, with no
worker (jobs stay where the test puts them): ``max_concurrent_jobs`` bounds running jobs (delivering
ones included), ``max_queued_jobs`` queued ones, concurrent submits cannot overshoot either, and a
request refused for them does not spend the key's rate limit."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from harness import Customer, LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from sqlalchemy import Engine, create_engine, text

from app.db import sync_url
from app.migrate import upgrade_head

BODY = {"prompt": "a pony", "size": "64x64", "steps": 1}


@dataclass
class Service:
    server: LiveServer
    admin_key: str
    engine: Engine

    def customer(self, **limits: int) -> Customer:
        code = f"inflight-{secrets.token_hex(4)}"
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            r = client.post("/admin/plans", headers={"Authorization": f"Bearer {self.admin_key}"},
                            json={"code": code, "name": code, **limits})
            assert r.status_code == 201, r.text
            return new_customer(client, self.admin_key, plan=code)

    def submit(self, cust: Customer) -> httpx.Response:
        return httpx.post(f"{self.server.url}/v1/generations", json=BODY, headers=cust.headers, timeout=60)

    def set_status(self, job_id: str, status: str) -> None:
        """Moves a job as a worker would have (there is none here)."""
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET status = :s WHERE id = :j"), {"s": status, "j": job_id})

    def count(self, cust: Customer, status: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM jobs WHERE api_key_id = :k AND status = :s"),
                                    {"k": cust.key_id, "s": status}).scalar_one())


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def service(request: pytest.FixtureRequest, pg_factory, demo_model_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("var")
    if request.param == "postgres":
        url = pg_factory()
    else:
        url = f"sqlite+aiosqlite:///{data_dir / 'ponyserve.db'}"
        upgrade_head(url)
    settings = make_settings(url, data_dir, demo_model_dir)
    admin = bootstrap_admin(settings)
    server = start_server(settings, embedded_worker=False)
    engine = create_engine(sync_url(url))
    yield Service(server=server, admin_key=admin, engine=engine)
    server.stop()
    engine.dispose()


def _code(r: httpx.Response) -> str:
    assert r.status_code == 429, r.text
    return str(r.json()["error"]["code"])


async def _fire(url: str, headers: dict[str, str], count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=count)) as c:
        return list(await asyncio.gather(*[c.post("/v1/generations", json=BODY, headers=headers)
                                           for _ in range(count)]))


def test_concurrent_submits_cannot_exceed_max_queued_jobs(service: Service) -> None:
    cust = service.customer(max_queued_jobs=1)
    responses = asyncio.run(_fire(service.server.url, cust.headers, 8))
    assert sorted(r.status_code for r in responses) == [202] + [429] * 7
    assert {_code(r) for r in responses if r.status_code == 429} == {"queue_limit_exceeded"}
    assert service.count(cust, "queued") == 1


def test_concurrent_submits_cannot_exceed_max_concurrent_jobs(service: Service) -> None:
    cust = service.customer(max_concurrent_jobs=2)
    running = [service.submit(cust).json()["id"] for _ in range(2)]
    for job_id in running:
        service.set_status(job_id, "running")
    responses = asyncio.run(_fire(service.server.url, cust.headers, 6))
    assert {_code(r) for r in responses} == {"concurrency_limit_exceeded"}
    assert service.count(cust, "queued") == 0


def test_max_concurrent_jobs_counts_running_and_delivering_jobs_only(service: Service) -> None:
    cust = service.customer(max_concurrent_jobs=1)
    first = service.submit(cust)
    assert first.status_code == 202, first.text
    # Queued jobs are not running: they do not use the concurrency allowance.
    assert service.submit(cust).status_code == 202
    service.set_status(first.json()["id"], "running")
    refused = service.submit(cust)
    assert _code(refused) == "concurrency_limit_exceeded"
    assert refused.headers["Retry-After"] == "1"
    # Generated, still being stored and settled: its worker is not done with it.
    service.set_status(first.json()["id"], "delivering")
    assert _code(service.submit(cust)) == "concurrency_limit_exceeded"
    service.set_status(first.json()["id"], "succeeded")
    assert service.submit(cust).status_code == 202


def test_max_queued_jobs_counts_queued_jobs_only(service: Service) -> None:
    cust = service.customer(max_queued_jobs=2)
    first, second = service.submit(cust), service.submit(cust)
    assert (first.status_code, second.status_code) == (202, 202)
    assert _code(service.submit(cust)) == "queue_limit_exceeded"
    service.set_status(first.json()["id"], "running")
    assert service.submit(cust).status_code == 202
    assert _code(service.submit(cust)) == "queue_limit_exceeded"


def test_requests_refused_for_in_flight_limits_do_not_spend_rate_tokens(service: Service) -> None:
    # Burst 2, one token a minute back: without refunds the second refusal would already be a rate 429.
    cust = service.customer(requests_per_minute=1, burst=2, max_queued_jobs=1)
    first = service.submit(cust)
    assert first.status_code == 202, first.text
    assert [_code(service.submit(cust)) for _ in range(4)] == ["queue_limit_exceeded"] * 4
    service.set_status(first.json()["id"], "running")
    assert service.submit(cust).status_code == 202
    assert _code(service.submit(cust)) == "rate_limit_exceeded"
