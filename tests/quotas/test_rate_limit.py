"""GCRA rate limits in Postgres, through the HTTP API: a burst beyond the limit gets 429 with honest
RateLimit headers and Retry-After; concurrent requests well within the limit all pass, and a tight
limit refuses exactly the excess however the requests interleave."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Customer, LiveServer, bootstrap_admin, make_settings, new_customer, start_server

BODY = {"prompt": "a pony", "size": "64x64", "steps": 1}


def _plan_customer(client: httpx.Client, admin_key: str, **limits: int) -> Customer:
    code = f"rl-{secrets.token_hex(4)}"
    r = client.post("/admin/plans", headers={"Authorization": f"Bearer {admin_key}"},
                    json={"code": code, "name": code, **limits})
    assert r.status_code == 201, r.text
    return new_customer(client, admin_key, plan=code)


def test_burst_beyond_the_limit_is_429_and_waiting_retry_after_passes(client, admin_key) -> None:
    cust = _plan_customer(client, admin_key, requests_per_minute=60, burst=3)

    passed = [client.post("/v1/generations", json=BODY, headers=cust.headers) for _ in range(3)]
    assert [p.status_code for p in passed] == [202, 202, 202]
    # 3 at once, then one a second: 3 per ceil(3 * 60 / 60) = 3 seconds is never refused.
    assert passed[0].headers["RateLimit-Policy"] == '"requests";q=3;w=3'
    assert passed[0].headers["RateLimit"] == '"requests";r=2;t=1'
    assert passed[2].headers["RateLimit"].startswith('"requests";r=0;')

    limited = client.post("/v1/generations", json=BODY, headers=cust.headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert limited.headers["RateLimit-Policy"] == '"requests";q=3;w=3'
    assert limited.headers["RateLimit"].startswith('"requests";r=0;')

    time.sleep(retry_after)
    assert client.post("/v1/generations", json=BODY, headers=cust.headers).status_code == 202


def test_rate_limit_headers_on_sync_generation(client, customer) -> None:
    r = client.post("/v1/images/generations", json=BODY, headers=customer.headers)
    assert r.status_code == 200
    # The free plan: 60 a minute, burst 10 — the 10 come back within 10 seconds.
    assert r.headers["RateLimit-Policy"] == '"requests";q=10;w=10'
    assert r.headers["RateLimit"] == '"requests";r=9;t=1'


# -- concurrent requests, on a server without a worker (the jobs stay queued, no CPU spent) ----------


@pytest.fixture(scope="module")
def queue_only(pg_factory, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[LiveServer, str]]:
    settings = make_settings(pg_factory(), tmp_path_factory.mktemp("var"), demo_model_dir)
    admin = bootstrap_admin(settings)
    server = start_server(settings, embedded_worker=False)
    yield server, admin
    server.stop()


async def _fire(url: str, headers: dict[str, str], count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=count)) as c:
        return list(await asyncio.gather(*[c.post("/v1/generations", json=BODY, headers=headers)
                                           for _ in range(count)]))


def test_concurrent_requests_within_a_large_limit_all_pass(queue_only) -> None:
    # They queue on the key's rate row; each must be timed when it gets the row, not when it arrived.
    server, admin = queue_only
    with httpx.Client(base_url=server.url, timeout=60) as client:
        cust = _plan_customer(client, admin, requests_per_minute=100_000, burst=1_000)
    responses = asyncio.run(_fire(server.url, cust.headers, 64))
    assert [r.status_code for r in responses] == [202] * 64, [r.text for r in responses if r.status_code != 202]
    assert {r.headers["RateLimit-Policy"] for r in responses} == {'"requests";q=1000;w=1'}
    remaining = sorted(int(r.headers["RateLimit"].split("r=")[1].split(";")[0]) for r in responses)
    assert remaining[0] >= 1_000 - 64 and remaining[-1] <= 999


def test_a_tight_limit_refuses_exactly_the_excess_of_concurrent_requests(queue_only) -> None:
    # One a minute, burst 5: nothing refills during the test, so exactly 5 of 20 pass.
    server, admin = queue_only
    with httpx.Client(base_url=server.url, timeout=60) as client:
        cust = _plan_customer(client, admin, requests_per_minute=1, burst=5)
    responses = asyncio.run(_fire(server.url, cust.headers, 20))
    assert sorted(r.status_code for r in responses) == [202] * 5 + [429] * 15
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
    assert {r.headers["RateLimit-Policy"] for r in responses} == {'"requests";q=5;w=300'}
    assert all(r.headers["RateLimit"].startswith('"requests";r=0;') for r in refused)
    # The next token is one interval (60 s) after the first request, less the time the test took.
    assert all(50 <= int(r.headers["Retry-After"]) <= 60 for r in refused)
