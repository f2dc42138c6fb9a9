"""The rest of the A1111 surface clients call: png-info reads our infotext back; interrupt and skip stop
the caller's own current job, never another key's."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import webuiapi
from harness import LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from PIL import Image

TXT2IMG = {"prompt": "a pony, at dusk", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 2,
           "seed": 77, "sampler_name": "Euler a", "cfg_scale": 6.5}


def _b64(image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_png_info_reads_back_what_our_images_say(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    made = client.post("/sdapi/v1/txt2img", headers=customer.headers, json=TXT2IMG)
    assert made.status_code == 200, made.text
    image = made.json()["images"][0]
    r = client.post("/sdapi/v1/png-info", headers=customer.headers, json={"image": image})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["info"] == json.loads(made.json()["info"])["infotexts"][0]
    assert body["info"].splitlines()[0] == "score_9, score_8_up, score_7_up, a pony, at dusk"
    params = body["parameters"]
    assert params["Prompt"] == "score_9, score_8_up, score_7_up, a pony, at dusk"
    assert params["Negative prompt"] == "blurry"
    assert (params["Steps"], params["Sampler"], params["CFG scale"], params["Seed"], params["Size"]) == (
        "2", "Euler a", "6.5", "77", "64x64")
    assert "trainedAlgorithmicMedia" in " ".join(body["items"].values())

    # The same through webuiapi, with a data: URL, as clients send it.
    host, port = client.base_url.host, client.base_url.port
    api = webuiapi.WebUIApi(host=host, port=port)
    api.session.headers.update(customer.headers)
    info = api.session.post(f"{api.baseurl}/png-info", json={"image": f"data:image/png;base64,{image}"}).json()
    assert info["parameters"]["Seed"] == "77"


def test_png_info_of_an_image_without_parameters_and_a_large_upload(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8))
    big = _b64(noise, "PNG")
    assert len(big) > 64 * 1024  # beyond the default body limit: this route takes images
    r = client.post("/sdapi/v1/png-info", headers=customer.headers, json={"image": big})
    assert r.status_code == 200, r.text
    assert r.json() == {"info": "", "items": {}, "parameters": {}}
    jpeg = client.post("/sdapi/v1/png-info", headers=customer.headers, json={"image": _b64(noise, "JPEG")})
    assert jpeg.status_code == 200 and jpeg.json()["info"] == ""


@pytest.mark.parametrize("image, code", [
    ("not base64 at all!!", "invalid_image"),
    (base64.b64encode(b"GIF89a" + b"\0" * 64).decode(), "invalid_image"),
    ("", None),
])
def test_png_info_refuses_what_is_not_an_image(client: httpx.Client, customer, image: str,  # type: ignore[no-untyped-def]
                                               code: str | None) -> None:
    r = client.post("/sdapi/v1/png-info", headers=customer.headers, json={"image": image})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "image"
    if code is not None:
        assert r.json()["error"]["code"] == code


def test_png_info_refuses_a_decompression_bomb_before_decoding_it(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    bomb = _b64(Image.new("L", (5000, 5000)), "PNG")  # a few KB encoded, 25 megapixels decoded
    r = client.post("/sdapi/v1/png-info", headers=customer.headers, json={"image": bomb})
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_too_large", r.text


@pytest.fixture(scope="module")
def idle(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_settings(pg_factory(), tmp_path_factory.mktemp("idle-a1111"), demo_model_dir),
                          embedded_worker=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idle_admin(idle: LiveServer) -> str:
    return bootstrap_admin(idle.settings)


@pytest.mark.parametrize("route", ["interrupt", "skip"])
def test_interrupt_and_skip_stop_only_the_callers_current_job(idle: LiveServer, idle_admin: str, route: str) -> None:
    with httpx.Client(base_url=idle.url, timeout=60) as c:
        admin = idle_admin
        me, other = new_customer(c, admin), new_customer(c, admin)
        body = {"prompt": "a pony", "size": "64x64", "steps": 2}
        older = c.post("/v1/generations", headers=me.headers, json=body).json()["id"]
        current = c.post("/v1/generations", headers=me.headers, json=body).json()["id"]
        theirs = c.post("/v1/generations", headers=other.headers, json=body).json()["id"]

        r = c.post(f"/sdapi/v1/{route}", headers=me.headers)
        assert r.status_code == 200, r.text

        def status(job: str, who: object) -> str:
            return str(c.get(f"/v1/generations/{job}", headers=who.headers).json()["status"])  # type: ignore[attr-defined]

        assert status(current, me) == "cancelled"
        assert status(older, me) == "queued"
        assert status(theirs, other) == "queued"
        ended = c.get(f"/v1/generations/{current}", headers=me.headers).json()
        assert ended["usage"]["images"] == 0 and ended["error"]["code"] == "cancelled"
        assert c.post(f"/sdapi/v1/{route}").status_code == 401
