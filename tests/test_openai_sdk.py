"""The official OpenAI Python SDK works against ponyserve unchanged."""

from __future__ import annotations

import base64
import io

import openai
from PIL import Image


def test_openai_client_images_generate(live, customer) -> None:
    client = openai.OpenAI(api_key=customer.key, base_url=f"{live.url}/v1", max_retries=0)
    result = client.images.generate(prompt="a pony astronaut", model="demo", size="256x256", n=2,
                                    response_format="b64_json")
    assert len(result.data) == 2
    for item in result.data:
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (256, 256)
        assert item.revised_prompt.endswith("a pony astronaut")


def test_openai_client_surfaces_our_errors(live, customer) -> None:
    client = openai.OpenAI(api_key=customer.key, base_url=f"{live.url}/v1", max_retries=0)
    try:
        client.images.generate(prompt="x", model="no-such-model")
    except openai.BadRequestError as exc:
        assert exc.code == "model_not_found"
    else:
        raise AssertionError("expected a 400")


def test_openai_client_with_revoked_key_gets_authentication_error(live, client, admin_key, make_customer) -> None:
    cust = make_customer()
    client.delete(f"/admin/keys/{cust.key_id}", headers={"Authorization": f"Bearer {admin_key}"})
    sdk = openai.OpenAI(api_key=cust.key, base_url=f"{live.url}/v1", max_retries=0)
    try:
        sdk.images.generate(prompt="x")
    except openai.AuthenticationError:
        pass
    else:
        raise AssertionError("expected a 401")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_openai_client_images_edit_inpaints_where_the_mask_is_transparent(live, customer) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    client = openai.OpenAI(api_key=customer.key, base_url=f"{live.url}/v1", max_retries=0)
    pixels = np.random.default_rng(4).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    original = Image.fromarray(pixels)
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # OpenAI's convention: fully transparent = edit here
    result = client.images.edit(image=("pony.png", _png(original), "image/png"),
                                mask=("mask.png", _png(mask), "image/png"), prompt="a pony hat", n=2,
                                response_format="b64_json")
    assert len(result.data) == 2
    edited = np.asarray(Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).convert("RGB"), dtype=int)
    assert edited.shape == (64, 64, 3)
    keep = np.asarray(mask.getchannel("A")) == 255
    assert (edited[keep] == pixels.astype(int)[keep]).all()
    assert np.abs(edited[~keep] - pixels.astype(int)[~keep]).mean() > 5
    assert result.data[0].revised_prompt.endswith("a pony hat")

    # The image's own transparency is the mask when none is sent.
    holed = original.convert("RGBA")
    holed.paste((0, 0, 0, 0), (0, 0, 16, 16))
    again = client.images.edit(image=("holed.png", _png(holed), "image/png"), prompt="a pony", size="64x64",
                               response_format="b64_json")
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(again.data[0].b64_json))).convert("RGB"), dtype=int)
    assert (out[16:, 16:] == pixels.astype(int)[16:, 16:]).all()


def test_openai_client_images_edit_errors_are_clear(live, customer) -> None:  # type: ignore[no-untyped-def]
    client = openai.OpenAI(api_key=customer.key, base_url=f"{live.url}/v1", max_retries=0)
    image = _png(Image.new("RGB", (64, 64)))
    for kwargs, code, param in [
        ({"mask": ("m.png", _png(Image.new("RGBA", (32, 32))), "image/png")}, "mask_size_mismatch", "mask"),
        ({"mask": ("m.png", _png(Image.new("RGB", (64, 64))), "image/png")}, "invalid_mask", "mask"),
    ]:
        try:
            client.images.edit(image=("i.png", image, "image/png"), prompt="x", **kwargs)
        except openai.BadRequestError as exc:
            assert (exc.code, exc.param) == (code, param)
        else:
            raise AssertionError(f"expected a 400 for {kwargs}")
    try:
        client.images.edit(image=("i.gif", b"GIF89a" + b"\0" * 30, "image/gif"), prompt="x")
    except openai.BadRequestError as exc:
        assert (exc.code, exc.param) == ("invalid_image", "image")
    else:
        raise AssertionError("expected a 400 for a GIF")
