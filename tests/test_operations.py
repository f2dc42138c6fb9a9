"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import time


def test_healthz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_sees_database_and_worker(client) -> None:
    # The shared server's worker may still be loading its model when this runs first: wait for it.
    deadline = time.monotonic() + 60
    while (r := client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, r.text
        assert r.json()["database"] is True, r.text
        time.sleep(0.2)
    body = r.json()
    assert body["database"] is True
    assert sum(body["workers"].get(s, 0) for s in ("ready", "busy")) >= 1


def test_metrics_expose_latency_jobs_and_queue_depth(client, customer) -> None:
    r = client.post("/v1/images/generations", headers=customer.headers,
                    json={"prompt": "a pony", "size": "64x64", "steps": 1})
    assert r.status_code == 200
    metrics = client.get("/metrics").text
    assert ('ponyserve_http_request_duration_seconds_count{method="POST",route="/v1/images/generations",'
            'status="200"}') in metrics
    assert 'ponyserve_jobs_finished_total{model="demo",status="succeeded"}' in metrics
    assert "ponyserve_queue_depth " in metrics
    # The fleet gauges are refreshed in the background, and every test server in this process
    # refreshes the same process-wide gauges from its own database: wait for this one's.
    deadline = time.monotonic() + 10
    while 'ponyserve_workers{state="ready"}' not in metrics and 'ponyserve_workers{state="busy"}' not in metrics:
        assert time.monotonic() < deadline, "no worker in the fleet gauges"
        time.sleep(0.05)
        metrics = client.get("/metrics").text


def test_every_response_carries_a_request_id(client) -> None:
    assert client.get("/healthz").headers["x-request-id"]
    assert client.get("/healthz", headers={"X-Request-Id": "abc123"}).headers["x-request-id"] == "abc123"


def test_openapi_documents_the_contract(client) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/v1/images/generations", "/v1/generations", "/v1/generations/{job_id}",
                 "/v1/generations/{job_id}/cancel", "/v1/images/{image_id}", "/v1/models", "/admin/accounts",
                 "/admin/accounts/{account_id}/keys", "/admin/keys/{key_id}", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
    post = paths["/v1/images/generations"]["post"]
    assert post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "HTTPValidationError" not in str(post["responses"])
