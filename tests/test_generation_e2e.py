"""A key, a prompt, a real image: through HTTP, the queue, the worker and back."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image
from sqlalchemy import Engine, text


def _generate(client: httpx.Client, headers: dict[str, str], **body: object) -> httpx.Response:
    payload = {"prompt": "a pony in a meadow", "size": "64x64", "steps": 2, "response_format": "b64_json", **body}
    return client.post("/v1/images/generations", json=payload, headers=headers)


def test_generation_returns_decodable_image_of_requested_size(client, customer) -> None:
    r = _generate(client, customer.headers, size="128x96", seed=7)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 1
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert image.format == "PNG"
    assert image.size == (128, 96)
    assert body["data"][0]["seed"] == 7
    assert body["usage"]["images"] == 1
    assert body["data"][0]["revised_prompt"] == "score_9, score_8_up, score_7_up, a pony in a meadow"


def test_same_seed_gives_same_pixels_and_another_seed_differs(client, customer) -> None:
    r = _generate(client, customer.headers, seed=1234)
    assert r.status_code == 200, r.text
    first = r.json()["data"][0]["b64_json"]
    second = _generate(client, customer.headers, seed=1234).json()["data"][0]["b64_json"]
    other = _generate(client, customer.headers, seed=4321).json()["data"][0]["b64_json"]
    assert _pixels(first) == _pixels(second)
    assert _pixels(first) != _pixels(other)


def _pixels(b64: str) -> bytes:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.convert("RGB").tobytes()


def test_png_carries_a1111_parameters(client, customer) -> None:
    body = _generate(client, customer.headers, seed=99, negative_prompt="blurry", sampler="DDIM").json()
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    params = image.text["parameters"]
    assert params.splitlines()[0] == "score_9, score_8_up, score_7_up, a pony in a meadow"
    assert "Negative prompt: blurry" in params
    assert "Steps: 2, Sampler: DDIM, CFG scale: 5, Seed: 99, Size: 64x64, Model: demo" in params


def test_ledger_has_one_row_per_image(client, customer, pg_engine: Engine) -> None:
    r = _generate(client, customer.headers, n=3, seed=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["seed"] for d in body["data"]] == [10, 11, 12]
    with pg_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT image_id, width, height, steps, model, api_key_id, account_id FROM usage_ledger "
                 "WHERE job_id = :j ORDER BY id"), {"j": body["id"]}
        ).all()
    assert sorted(r.image_id for r in rows) == sorted(d["id"] for d in body["data"])
    assert {(r.width, r.height, r.steps, r.model, r.api_key_id, r.account_id) for r in rows} == {
        (64, 64, 2, "demo", customer.key_id, customer.account_id)
    }


def test_url_response_format_serves_image_through_signed_link(client, customer) -> None:
    body = _generate(client, customer.headers, response_format="url", output_format="webp").json()
    url = body["data"][0]["url"]
    fetched = httpx.get(url)  # no key: the signature is the credential
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    tampered = httpx.get(url.replace("sig=", "sig=0"))
    assert tampered.status_code == 401


def test_image_fetch_by_key_is_limited_to_its_owner(client, customer, make_customer) -> None:
    image_id = _generate(client, customer.headers, output_format="jpeg").json()["data"][0]["id"]
    mine = client.get(f"/v1/images/{image_id}", headers=customer.headers)
    assert mine.status_code == 200
    assert mine.headers["content-type"] == "image/jpeg"
    stranger = make_customer()
    assert client.get(f"/v1/images/{image_id}", headers=stranger.headers).status_code == 404


def test_async_job_flow_with_prefer_wait(client, customer) -> None:
    payload = {"prompt": "a pony", "size": "64x64", "steps": 2}
    queued = client.post("/v1/generations", json=payload, headers=customer.headers)
    assert queued.status_code == 202
    job = queued.json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert queued.headers["location"] == f"/v1/generations/{job['id']}"

    waited = client.post("/v1/generations", json=payload, headers={**customer.headers, "Prefer": "wait=60"})
    assert waited.status_code == 200, waited.text
    done = waited.json()
    assert done["status"] == "succeeded"
    assert done["progress"] == {"step": 2, "total": 2}
    assert len(done["outputs"]) == 1
    assert done["usage"]["images"] == 1
    assert waited.headers["preference-applied"] == "wait=60"

    polled = client.get(f"/v1/generations/{done['id']}", headers=customer.headers)
    assert polled.status_code == 200
    assert polled.json()["outputs"] == done["outputs"] or polled.json()["outputs"][0]["id"] == done["outputs"][0]["id"]


def test_another_account_cannot_see_a_job(client, customer, make_customer) -> None:
    job = client.post("/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 1},
                      headers=customer.headers).json()
    other = make_customer()
    r = client.get(f"/v1/generations/{job['id']}", headers=other.headers)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_models_list_shows_demo_model_with_defaults(client, customer) -> None:
    r = client.get("/v1/models", headers=customer.headers)
    assert r.status_code == 200
    models = {m["id"]: m for m in r.json()["data"]}
    assert models["demo"]["defaults"]["sampler"] == "Euler a"
    assert "DPM++ 2M Karras" in models["demo"]["samplers"]
