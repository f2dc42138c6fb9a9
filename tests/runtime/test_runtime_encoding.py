from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from app.runtime.encoding import MEDIA_TYPES, a1111_parameters, encode_image, read_parameters

BASE: dict[str, Any] = {
    "prompt": "score_9, a pony",
    "negative_prompt": "lowres",
    "steps": 20,
    "sampler": "Euler a",
    "guidance_scale": 7.0,
    "seed": 123,
    "width": 512,
    "height": 512,
    "model": "demo",
}


def _image() -> Image.Image:
    image = Image.new("RGB", (48, 32))
    image.putdata([(x * 5 % 256, y * 7 % 256, (x * y) % 256) for y in range(32) for x in range(48)])
    return image


def test_infotext_matches_automatic1111() -> None:
    assert a1111_parameters(**BASE) == (
        "score_9, a pony\n"
        "Negative prompt: lowres\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model: demo"
    )


def test_infotext_without_negative_prompt_omits_the_line() -> None:
    text = a1111_parameters(**{**BASE, "negative_prompt": "", "guidance_scale": 5.5, "width": 832, "height": 1216})
    assert (
        text == "score_9, a pony\nSteps: 20, Sampler: Euler a, CFG scale: 5.5, Seed: 123, Size: 832x1216, Model: demo"
    )


def test_infotext_quotes_values_with_separators_and_adds_clip_skip() -> None:
    text = a1111_parameters(**{**BASE, "model": "pony, v6"}, clip_skip=2)
    assert text.endswith('Model: "pony, v6", Clip skip: 2')
    assert "Clip skip" not in a1111_parameters(**BASE, clip_skip=1)


@pytest.mark.parametrize("parameters", ["plain ascii\nSteps: 1", "ünïcode 🐴 日本語\nSteps: 1"])
def test_png_carries_parameters_text_chunk(parameters: str) -> None:
    data = encode_image(_image(), "png", parameters)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["parameters"] == parameters
        assert image.size == (48, 32)
    assert read_parameters(data) == parameters


def test_latin1_parameters_use_a_plain_text_chunk() -> None:
    data = encode_image(_image(), "png", "a pony\nSteps: 1")
    assert b"tEXtparameters\x00a pony" in data


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lossy_formats_carry_parameters_in_exif_user_comment(fmt: str) -> None:
    parameters = a1111_parameters(**{**BASE, "prompt": "ünïcode 🐴, a pony"})
    data = encode_image(_image(), fmt, parameters)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == fmt.upper()
        assert image.size == (48, 32)
    assert read_parameters(data) == parameters


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encoding_is_deterministic(fmt: str) -> None:
    first = encode_image(_image(), fmt, "a\nSteps: 1")  # type: ignore[arg-type]
    assert encode_image(_image(), fmt, "a\nSteps: 1") == first  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_no_parameters_means_no_metadata(fmt: str) -> None:
    assert read_parameters(encode_image(_image(), fmt, None)) is None  # type: ignore[arg-type]


def test_oversized_exif_is_dropped_not_fatal() -> None:
    data = encode_image(_image(), "jpeg", "x" * 40_000)
    assert read_parameters(data) is None


def test_rgba_input_is_flattened_for_jpeg() -> None:
    data = encode_image(_image().convert("RGBA"), "jpeg", None)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB"


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError):
        encode_image(_image(), "gif", None)  # type: ignore[arg-type]


def test_media_types() -> None:
    assert dict(MEDIA_TYPES) == {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
