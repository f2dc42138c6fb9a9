"""Idempotency-Key: retries return the original result and are charged once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from harness import wait_jobs_finished
from sqlalchemy import Engine, text

BODY = {"prompt": "a pony", "size": "64x64", "steps": 2}


def test_twenty_concurrent_posts_with_one_key_make_one_job_and_one_charge(live, make_customer, pg_engine: Engine
                                                                          ) -> None:
    cust = make_customer(plan="internal")
    headers = {**cust.headers, "Idempotency-Key": "order-42"}

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            return c.post("/v1/generations", json=BODY, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    ok = [r for r in responses if r.status_code in (200, 202)]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(ok) + len(conflicts) == 20, [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in conflicts} <= {"idempotency_in_progress"}
    assert len({r.json()["id"] for r in ok}) == 1
    job_id = ok[0].json()["id"]

    with httpx.Client(base_url=live.url, timeout=60) as c:
        wait_jobs_finished(c, cust.headers, [job_id])
        replay = c.post("/v1/generations", json=BODY, headers=headers)
        assert replay.status_code == 200
        assert replay.json()["id"] == job_id
        assert replay.headers["Idempotent-Replayed"] == "true"
        usage = c.get("/v1/usage", headers=cust.headers).json()
    with pg_engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE account_id = :a"), {"a": cust.account_id}).scalar()
        charged = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE account_id = :a"),
                               {"a": cust.account_id}).scalar()
    assert jobs == 1
    assert charged == 1
    assert usage["account"]["day"]["used"] == 1


def test_same_key_with_a_different_body_is_422(client, make_customer) -> None:
    cust = make_customer(plan="internal")
    headers = {**cust.headers, "Idempotency-Key": "k-1"}
    assert client.post("/v1/generations", json=BODY, headers=headers).status_code == 202
    r = client.post("/v1/generations", json={**BODY, "prompt": "a horse"}, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "idempotency_key_reused"


def test_sync_retry_returns_the_original_images(client, make_customer, pg_engine: Engine) -> None:
    cust = make_customer(plan="internal")
    headers = {**cust.headers, "Idempotency-Key": "sync-1"}
    body = {**BODY, "response_format": "b64_json"}
    first = client.post("/v1/images/generations", json=body, headers=headers)
    again = client.post("/v1/images/generations", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert [d["id"] for d in first.json()["data"]] == [d["id"] for d in again.json()["data"]]
    assert first.json()["data"][0]["b64_json"] == again.json()["data"][0]["b64_json"]
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM usage_ledger WHERE account_id = :a"),
                            {"a": cust.account_id}).scalar() == 1


def test_a_refused_request_does_not_burn_its_idempotency_key(client, make_customer) -> None:
    cust = make_customer(plan="internal")
    headers = {**cust.headers, "Idempotency-Key": "retry-after-fix"}
    bad = client.post("/v1/generations", json={**BODY, "sampler": "nope"}, headers=headers)
    assert bad.status_code == 400
    # Same key, different (fixed) body: the failed attempt left no record behind.
    assert client.post("/v1/generations", json=BODY, headers=headers).status_code == 202
