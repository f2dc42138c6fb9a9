"""Hires. fix on the native API and A1111's enable_hr: final size, both passes metered, clear refusals."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image


def _generate(client: httpx.Client, headers: dict[str, str], **body: object) -> httpx.Response:
    payload = {"prompt": "a pony", "size": "64x64", "steps": 4, "response_format": "b64_json", "seed": 8, **body}
    return client.post("/v1/images/generations", headers=headers, json=payload)


def _size(body: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    return Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size  # type: ignore[no-any-return]


def test_native_hires_makes_the_larger_image_and_meters_both_passes(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    plain = _generate(client, customer.headers)
    hires = _generate(client, customer.headers, hires={"scale": 2, "denoise": 0.5, "steps": 6})
    again = _generate(client, customer.headers, hires={"scale": 2, "denoise": 0.5, "steps": 6})
    assert hires.status_code == 200, hires.text
    assert _size(hires.json()) == (128, 128)
    first = np.asarray(Image.open(io.BytesIO(base64.b64decode(hires.json()["data"][0]["b64_json"]))), dtype=int)
    second = np.asarray(Image.open(io.BytesIO(base64.b64decode(again.json()["data"][0]["b64_json"]))), dtype=int)
    assert np.abs(first - second).max() <= 2  # seeded like any generation
    # 64² × 4 steps, then 128² × int(6 × 0.5) = 3 steps: the work actually done.
    expected = round(64 * 64 / 1e6 * 4 + 128 * 128 / 1e6 * 3, 6)
    assert hires.json()["usage"]["megapixel_steps"] == pytest.approx(expected)
    assert plain.json()["usage"]["megapixel_steps"] == pytest.approx(64 * 64 / 1e6 * 4)
    assert hires.json()["usage"]["price_units"] >= plain.json()["usage"]["price_units"]
    job = client.get(f"/v1/generations/{hires.json()['id']}", headers=customer.headers).json()
    assert (job["parameters"]["width"], job["parameters"]["height"]) == (128, 128)


@pytest.mark.parametrize("hires, code", [
    ({"scale": 5}, None),
    ({"scale": 1}, None),
    ({"scale": 2, "upscaler": "R-ESRGAN 4x+"}, None),
    ({"scale": 2, "denoise": 0.1, "steps": 4}, "invalid_hires"),
])
def test_bad_hires_requests_are_400s(client: httpx.Client, customer, hires: dict[str, object],  # type: ignore[no-untyped-def]
                                     code: str | None) -> None:
    r = _generate(client, customer.headers, hires=hires)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith("hires")
    if code is not None:
        assert r.json()["error"]["code"] == code


def test_hires_beyond_the_models_limit_is_refused(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    r = _generate(client, customer.headers, size="512x512", hires={"scale": 4})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_size", r.text


def test_a1111_enable_hr_through_webuiapi(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    api = webuiapi.WebUIApi(host=client.base_url.host, port=client.base_url.port)
    api.session.headers.update(customer.headers)
    result = api.txt2img(prompt="a pony", width=64, height=64, steps=4, seed=2, sampler_name="Euler a",
                         enable_hr=True, hr_scale=1.5, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=4,
                         denoising_strength=0.5)
    assert result.image.size == (96, 96)
    refused = client.post("/sdapi/v1/txt2img", headers=customer.headers,
                          json={"prompt": "a pony", "width": 64, "height": 64, "steps": 4, "enable_hr": True,
                                "hr_upscaler": "4x-UltraSharp"})
    assert refused.status_code == 400
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == ("unsupported_parameter",
                                                                                   "hr_upscaler")
