"""Every kind of bad input gets a clear JSON 4xx and leaves nothing in the database."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

GOOD = {"prompt": "a pony", "size": "64x64", "steps": 2}


def _job_count(engine: Engine, account_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs WHERE account_id = :a"), {"a": account_id}).scalar())


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({**GOOD, "colour": "red"}, 400, "unknown_field", "colour"),
        ({**GOOD, "n": "two"}, 400, "invalid_value", "n"),
        ({**GOOD, "steps": 0}, 400, "invalid_value", "steps"),
        ({**GOOD, "n": 9}, 400, "invalid_value", "n"),
        ({**GOOD, "n": 0}, 400, "invalid_value", "n"),
        ({**GOOD, "prompt": ""}, 400, "invalid_value", "prompt"),
        ({**GOOD, "prompt": "   "}, 400, "invalid_value", "prompt"),
        ({"size": "64x64"}, 400, "missing_field", "prompt"),
        ({**GOOD, "size": "65x64"}, 400, "invalid_size", "size"),
        ({**GOOD, "size": "big"}, 400, "invalid_value", "size"),
        ({**GOOD, "width": 100, "height": 64}, 400, "invalid_size", "width"),
        ({**GOOD, "size": "2048x2048"}, 400, "invalid_size", "size"),
        ({**GOOD, "steps": 61}, 400, "invalid_steps", "steps"),
        ({**GOOD, "model": "sdxl-nope"}, 400, "model_not_found", "model"),
        ({**GOOD, "sampler": "Euler z"}, 400, "invalid_sampler", "sampler"),
        ({**GOOD, "seed": -1}, 400, "invalid_value", "seed"),
        ({**GOOD, "seed": 2**32}, 400, "invalid_value", "seed"),
        ({**GOOD, "output_format": "gif"}, 400, "invalid_value", "output_format"),
        ({**GOOD, "response_format": "blob"}, 400, "invalid_value", "response_format"),
        ({**GOOD, "prompt": "x" * 4001}, 400, "prompt_too_long", "prompt"),
        ([GOOD], 400, "invalid_value", None),
    ],
)
@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/generations"])
def test_bad_bodies_are_rejected_and_write_nothing(client, customer, pg_engine, path, body, status, code, param):
    r = client.post(path, json=body, headers=customer.headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert _job_count(pg_engine, customer.account_id) == 0


def test_unknown_sampler_error_names_the_accepted_ones(client, customer) -> None:
    r = client.post("/v1/generations", json={**GOOD, "sampler": "Euler z"}, headers=customer.headers)
    assert "Euler a" in r.json()["error"]["message"]
    assert "DPM++ 2M Karras" in r.json()["error"]["message"]


def test_malformed_json_is_422(client, customer, pg_engine) -> None:
    r = client.post("/v1/images/generations", content=b'{"prompt": "a pony",',
                    headers={**customer.headers, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "malformed_json"
    assert _job_count(pg_engine, customer.account_id) == 0


def test_huge_body_is_413(client, customer, pg_engine) -> None:
    # txt2img carries no image: the 64 KiB default applies.
    r = client.post("/sdapi/v1/txt2img", content=b'{"prompt": "' + b"a" * 200_000 + b'"}',
                    headers={**customer.headers, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    # Routes that take an image allow 32 MiB, and no more.
    big = client.post("/v1/images/generations", content=b'{"prompt": "' + b"a" * (33 * 1024 * 1024) + b'"}',
                      headers={**customer.headers, "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    assert _job_count(pg_engine, customer.account_id) == 0


def test_plan_limits_are_enforced(client, customer) -> None:
    # The free plan allows at most 4 images per request and 50 steps.
    r = client.post("/v1/generations", json={**GOOD, "n": 5}, headers=customer.headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "plan_limit_exceeded"


def test_unknown_route_and_method_are_json(client, customer) -> None:
    r = client.get("/v1/nothing-here", headers=customer.headers)
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    r = client.delete("/v1/images/generations", headers=customer.headers)
    assert r.status_code == 405
    assert "error" in r.json()
