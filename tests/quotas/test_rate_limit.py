"""GCRA rate limits in Postgres: a burst beyond the limit gets 429 with a Retry-After that is honest."""

from __future__ import annotations

import time


def test_burst_beyond_the_limit_is_429_and_waiting_retry_after_passes(client, admin_key, make_customer) -> None:
    admin = {"Authorization": f"Bearer {admin_key}"}
    r = client.post("/admin/plans", headers=admin, json={"code": "rl-60-3", "name": "RL", "requests_per_minute": 60,
                                                          "burst": 3})
    assert r.status_code == 201, r.text
    cust = make_customer(plan="rl-60-3")
    body = {"prompt": "a pony", "size": "64x64", "steps": 1}

    passed = [client.post("/v1/generations", json=body, headers=cust.headers) for _ in range(3)]
    assert [p.status_code for p in passed] == [202, 202, 202]
    assert passed[0].headers["RateLimit-Policy"] == '"requests";q=3;w=60'
    assert passed[0].headers["RateLimit"].startswith('"requests";r=2;')
    assert passed[2].headers["RateLimit"].startswith('"requests";r=0;')

    limited = client.post("/v1/generations", json=body, headers=cust.headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert "RateLimit" in limited.headers

    time.sleep(retry_after)
    assert client.post("/v1/generations", json=body, headers=cust.headers).status_code == 202


def test_rate_limit_headers_on_sync_generation(client, customer) -> None:
    r = client.post("/v1/images/generations", json={"prompt": "a pony", "size": "64x64", "steps": 1},
                    headers=customer.headers)
    assert r.status_code == 200
    assert r.headers["RateLimit-Policy"] == '"requests";q=10;w=60'


def test_concurrency_and_queue_limits_have_their_own_codes(client, admin_key, make_customer) -> None:
    admin = {"Authorization": f"Bearer {admin_key}"}
    r = client.post("/admin/plans", headers=admin, json={"code": "one-at-a-time", "name": "1",
                                                          "max_concurrent_jobs": 1})
    assert r.status_code == 201, r.text
    cust = make_customer(plan="one-at-a-time")
    body = {"prompt": "a pony", "size": "512x512", "steps": 40}
    first = client.post("/v1/generations", json=body, headers=cust.headers)
    assert first.status_code == 202
    second = client.post("/v1/generations", json=body, headers=cust.headers)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
    client.post(f"/v1/generations/{first.json()['id']}/cancel", headers=cust.headers)

    r = client.post("/admin/plans", headers=admin, json={"code": "queue-1", "name": "q", "max_queued_jobs": 1})
    assert r.status_code == 201, r.text
    cust = make_customer(plan="queue-1")
    statuses = []
    for _ in range(4):
        statuses.append(client.post("/v1/generations", json=body, headers=cust.headers))
    codes = [s.json()["error"]["code"] for s in statuses if s.status_code == 429]
    assert "queue_limit_exceeded" in codes
    for s in statuses:
        if s.status_code == 202:
            client.post(f"/v1/generations/{s.json()['id']}/cancel", headers=cust.headers)
