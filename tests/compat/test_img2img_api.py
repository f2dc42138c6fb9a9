"""img2img and inpainting through the native API and the webuiapi A1111 client: sizes, determinism, masks,
and clear 400s for bad uploads."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image


def _noise(size: tuple[int, int] = (64, 64), seed: int = 0) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _mask(size: tuple[int, int] = (64, 64)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    return mask


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _generate(client: httpx.Client, headers: dict[str, str], **body: object) -> httpx.Response:
    payload = {"prompt": "a pony", "steps": 4, "response_format": "b64_json", "seed": 3, **body}
    return client.post("/v1/images/generations", headers=headers, json=payload)


def test_native_img2img_is_sized_seeded_and_needs_its_init_image(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    init = _b64(_noise((96, 72)))
    first = _generate(client, customer.headers, init_image=init, strength=0.5)
    assert first.status_code == 200, first.text
    out = _image(first.json()["data"][0]["b64_json"])
    assert out.size == (96, 72)  # the init image's size when none is asked for
    again = _generate(client, customer.headers, init_image=f"data:image/png;base64,{init}", strength=0.5)
    assert np.abs(np.asarray(_image(again.json()["data"][0]["b64_json"]), dtype=int)
                  - np.asarray(out, dtype=int)).max() <= 2
    sized = _generate(client, customer.headers, init_image=init, size="64x64", resize_mode="crop")
    assert _image(sized.json()["data"][0]["b64_json"]).size == (64, 64)
    job = client.get(f"/v1/generations/{first.json()['id']}", headers=customer.headers).json()
    assert (job["parameters"]["width"], job["parameters"]["height"]) == (96, 72)


def test_native_inpainting_keeps_the_unmasked_pixels(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    init, mask = _noise(), _mask()
    r = _generate(client, customer.headers, init_image=_b64(init), mask=_b64(mask), strength=0.9)
    assert r.status_code == 200, r.text
    out = np.asarray(_image(r.json()["data"][0]["b64_json"]).convert("RGB"), dtype=int)
    keep = np.asarray(mask) == 0
    assert (out[keep] == np.asarray(init, dtype=int)[keep]).all()
    assert np.abs(out[~keep] - np.asarray(init, dtype=int)[~keep]).mean() > 5


@pytest.mark.parametrize("body, status, code, param", [
    ({"init_image": "!!not base64!!"}, 400, "invalid_image", "init_image"),
    ({"init_image": base64.b64encode(b"GIF89a" + b"\0" * 40).decode()}, 400, "invalid_image", "init_image"),
    ({"init_image": "@noise", "mask": "@small-mask"}, 400, "mask_size_mismatch", "mask"),
    ({"mask": "@small-mask"}, 400, "missing_init_image", "mask"),
    ({"strength": 0.5}, 400, "missing_init_image", "strength"),
    ({"init_image": "@noise", "strength": 0.1}, 400, "invalid_strength", "strength"),
    ({"init_image": "@bomb"}, 400, "image_too_large", "init_image"),
])
def test_bad_image_inputs_are_clear_400s(client: httpx.Client, customer, body: dict[str, object], status: int,  # type: ignore[no-untyped-def]
                                        code: str, param: str) -> None:
    fixtures = {"@noise": _b64(_noise()), "@small-mask": _b64(_mask((32, 32))),
                "@bomb": _b64(Image.new("L", (5000, 5000)))}
    payload = {k: fixtures.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    r = _generate(client, customer.headers, **payload)
    assert r.status_code == status, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == (code, param)


def test_an_upload_beyond_the_route_limit_is_413(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    huge = "A" * (34 * 1024 * 1024)
    r = client.post("/v1/images/generations", headers=customer.headers,
                    json={"prompt": "a pony", "init_image": huge})
    assert r.status_code == 413, r.text[:300]


def _api(client: httpx.Client, headers: dict[str, str]) -> webuiapi.WebUIApi:
    api = webuiapi.WebUIApi(host=client.base_url.host, port=client.base_url.port)
    api.session.headers.update(headers)
    return api


def test_webuiapi_img2img_with_and_without_a_mask(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    api = _api(client, customer.headers)
    init, mask = _noise(), _mask()
    plain = api.img2img(images=[init], prompt="a pony", width=64, height=64, steps=4, seed=9,
                        denoising_strength=0.6, sampler_name="Euler a")
    assert plain.image.size == (64, 64)
    again = api.img2img(images=[init], prompt="a pony", width=64, height=64, steps=4, seed=9,
                        denoising_strength=0.6, sampler_name="Euler a")
    assert np.abs(np.asarray(plain.image, dtype=int) - np.asarray(again.image, dtype=int)).max() <= 2
    assert plain.info["seed"] == 9

    painted = api.img2img(images=[init], mask_image=mask, prompt="a pony", width=64, height=64, steps=4, seed=9,
                          denoising_strength=0.9, inpainting_fill=1, mask_blur=0, sampler_name="Euler a")
    out = np.asarray(painted.image.convert("RGB"), dtype=int)
    keep = np.asarray(mask) == 0
    assert (out[keep] == np.asarray(init, dtype=int)[keep]).all()

    inverted = api.img2img(images=[init], mask_image=mask, prompt="a pony", width=64, height=64, steps=4, seed=9,
                           denoising_strength=0.9, inpainting_fill=1, mask_blur=0, inpainting_mask_invert=1,
                           sampler_name="Euler a")
    out = np.asarray(inverted.image.convert("RGB"), dtype=int)
    assert (out[~keep] == np.asarray(init, dtype=int)[~keep]).all()

    # webuiapi's default: only the masked area, at full resolution, pasted back; the rest is untouched.
    small = Image.new("L", (64, 64), 0)
    small.paste(255, (40, 40, 56, 56))
    only = api.img2img(images=[init], mask_image=small, prompt="a pony", width=64, height=64, steps=4, seed=9,
                       denoising_strength=0.9, inpainting_fill=1, mask_blur=0, inpaint_full_res=True,
                       inpaint_full_res_padding=4, sampler_name="Euler a")
    out = np.asarray(only.image.convert("RGB"), dtype=int)
    outside = np.asarray(small) == 0
    assert only.image.size == (64, 64)
    assert (out[outside] == np.asarray(init, dtype=int)[outside]).all()
    assert np.abs(out[~outside] - np.asarray(init, dtype=int)[~outside]).mean() > 5


def test_a1111_img2img_refusals(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    base = {"prompt": "a pony", "width": 64, "height": 64, "steps": 4}
    cases = [
        ({}, "missing_field", "init_images"),
        ({"init_images": [_b64(_noise()), _b64(_noise())]}, "unsupported_parameter", "init_images"),
        ({"init_images": [_b64(_noise())], "mask": _b64(_mask((32, 32)))}, "mask_size_mismatch", "mask"),
        ({"init_images": ["nope"]}, "invalid_image", "init_images"),
    ]
    for extra, code, param in cases:
        r = client.post("/sdapi/v1/img2img", headers=customer.headers, json={**base, **extra})
        assert r.status_code == 400, (extra.keys(), r.text[:300])
        assert (r.json()["error"]["code"], r.json()["error"]["param"]) == (code, param), extra.keys()
