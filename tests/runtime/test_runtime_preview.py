"""Latent previews: the RGB projection itself, and how ``generate`` hands previews to its hook."""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from runtime_helpers import assert_images_close, pixel_difference

from app.runtime import pipelines
from app.runtime.pipelines import LoadedModel
from app.runtime.preview import (
    SD3_PROJECTION,
    SDXL_PROJECTION,
    encode_preview,
    latents_to_previews,
    projection_for,
)
from app.runtime.types import GenerationParams, ImagePrompt, PreviewHook

SMALL = GenerationParams(width=64, height=64, steps=6, guidance_scale=5.0, sampler="Euler a")


class Recorder:
    """A preview hook that wants ``indices`` every ``every`` steps and keeps what it gets."""

    def __init__(self, indices: Collection[int], every: int = 1) -> None:
        self.indices = list(indices)
        self.every = every
        self.asked: list[int] = []
        self.got: list[tuple[int, dict[int, Image.Image]]] = []

    def wanted(self, step: int, total: int) -> list[int]:
        self.asked.append(step)
        return self.indices if step % self.every == 0 else []

    def deliver(self, step: int, previews: Mapping[int, Image.Image]) -> None:
        self.got.append((step, dict(previews)))

    @property
    def hook(self) -> PreviewHook:
        return PreviewHook(wanted=self.wanted, deliver=self.deliver)


# -- the projection ---------------------------------------------------------------------------


def test_projection_is_chosen_by_the_vaes_latent_channels() -> None:
    assert projection_for(4) is SDXL_PROJECTION
    assert projection_for(16) is SD3_PROJECTION
    assert projection_for(8) is None
    assert len(SDXL_PROJECTION.factors) == 4 and len(SD3_PROJECTION.factors) == 16


def test_preview_has_the_latent_resolution_and_the_fitted_colours() -> None:
    latents = torch.zeros(2, 4, 16, 24)
    latents[1, 0] = 1.0
    first, second = latents_to_previews(latents, SDXL_PROJECTION)
    assert first.size == (24, 16) and first.mode == "RGB"
    # rgb = latent · factors + bias, mapped from [-1, 1] to [0, 255].
    expected_zero = [round((b + 1) * 127.5) for b in SDXL_PROJECTION.bias]
    assert np.asarray(first)[0, 0].tolist() == expected_zero
    expected_one = [round((f + b + 1) * 127.5) for f, b in zip(SDXL_PROJECTION.factors[0], SDXL_PROJECTION.bias,
                                                                  strict=True)]
    assert np.asarray(second)[5, 7].tolist() == expected_one


def test_preview_clamps_and_is_deterministic() -> None:
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3)) * 50
    [a] = latents_to_previews(latents, SD3_PROJECTION)
    [b] = latents_to_previews(latents.clone(), SD3_PROJECTION)
    assert a.tobytes() == b.tobytes()
    values = np.asarray(a)
    assert values.min() == 0 and values.max() == 255


def test_large_previews_are_scaled_down_keeping_the_aspect_ratio() -> None:
    [preview] = latents_to_previews(torch.zeros(1, 4, 300, 600), SDXL_PROJECTION)
    assert preview.size == (256, 128)
    [small] = latents_to_previews(torch.zeros(1, 4, 300, 600), SDXL_PROJECTION, max_side=1024)
    assert small.size == (600, 300)


def test_latents_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        latents_to_previews(torch.zeros(1, 16, 8, 8), SDXL_PROJECTION)
    with pytest.raises(ValueError, match="shape"):
        latents_to_previews(torch.zeros(4, 8, 8), SDXL_PROJECTION)


def test_encoded_preview_is_a_small_jpeg() -> None:
    latents = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(1))
    [preview] = latents_to_previews(latents, SDXL_PROJECTION)
    data = encode_preview(preview)
    assert data[:3] == b"\xff\xd8\xff"
    assert len(data) < 16_000
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (128, 128)


# -- generate with a preview hook ----------------------------------------------------------------


def test_generate_delivers_previews_at_the_requested_steps_only(
    runtime_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    vae = runtime_model.pipeline.vae
    decodes: list[int] = []
    real_decode = vae.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decodes.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", counting_decode)
    recorder = Recorder([1], every=2)
    steps: list[int] = []
    images = [ImagePrompt("a red pony", "", 1), ImagePrompt("a blue pony", "", 2)]
    result = runtime_model.generate(SMALL, images, lambda done, total: steps.append(done) is None,
                                    on_preview=recorder.hook)
    assert len(result) == 2
    assert steps == [1, 2, 3, 4, 5, 6]
    assert recorder.asked == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in recorder.got] == [2, 4, 6]
    for _, previews in recorder.got:
        assert list(previews) == [1]
        assert previews[1].size == (8, 8) and previews[1].mode == "RGB"
    # The latents move between steps, and so does their preview.
    assert recorder.got[0][1][1].tobytes() != recorder.got[-1][1][1].tobytes()
    # One VAE decode per final image: previews never go through the VAE.
    assert len(decodes) == 2


def test_previews_follow_the_images_latents(runtime_model: LoadedModel) -> None:
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
    alone, batched = Recorder([0]), Recorder([0, 1])
    image = ImagePrompt("a pony", "", 7)
    runtime_model.generate(params, [image], on_preview=alone.hook)
    runtime_model.generate(params, [ImagePrompt("a dragon", "", 8), image], on_preview=batched.hook)
    same = alone.got[-1][1][0]
    assert_images_close(batched.got[-1][1][1], same)
    assert pixel_difference(batched.got[-1][1][0], same).max() > 2


def test_padding_rows_are_never_previewed(runtime_model: LoadedModel) -> None:
    padded = LoadedModel(runtime_model.spec, "cpu", runtime_model.dtype, runtime_model.pipeline, batch_buckets=[4])
    recorder = Recorder([0, 1, 2, 3, 9])
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
    result = padded.generate(params, [ImagePrompt("a", "", 1), ImagePrompt("b", "", 2)], on_preview=recorder.hook)
    assert len(result) == 2
    assert [(step, sorted(p)) for step, p in recorder.got] == [(1, [0, 1]), (2, [0, 1])]


class FakeOOM(RuntimeError):
    pass


def test_split_calls_report_previews_by_their_index_in_the_whole_call(
    runtime_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_generate = runtime_model.generate
    parts: list[int] = []

    def tight_device(p: GenerationParams, batch: Sequence[ImagePrompt], on_step: object = None, *,
                     on_preview: PreviewHook | None = None) -> list[Image.Image]:
        parts.append(len(batch))
        if len(batch) > 1:
            raise FakeOOM("fake CUDA out of memory")
        return real_generate(p, batch, on_preview=on_preview)

    monkeypatch.setattr(runtime_model, "generate", tight_device)
    recorder = Recorder([1, 2])
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
    images = [ImagePrompt(f"pony {i}", "", 100 + i) for i in range(3)]
    results = runtime_model.generate_split(params, images, on_preview=recorder.hook,
                                           is_oom=lambda exc: isinstance(exc, FakeOOM))
    assert parts == [3, 2, 1, 1, 1]
    assert all(isinstance(r, Image.Image) for r in results)
    # Image 0 ran alone and wanted nothing; images 1 and 2 each ran alone and kept their index.
    assert [(step, list(p)) for step, p in recorder.got] == [(1, [1]), (2, [1]), (1, [2]), (2, [2])]


def test_a_failing_preview_stops_previews_but_not_the_images(
    runtime_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> list[Image.Image]:
        raise RuntimeError("preview exploded")

    monkeypatch.setattr(pipelines, "latents_to_previews", broken)
    recorder = Recorder([0])
    [image] = runtime_model.generate(SMALL, [ImagePrompt("a", "", 1)], on_preview=recorder.hook)
    assert image.size == (64, 64)
    assert recorder.asked == [1]
    assert recorder.got == []


def test_flow_families_preview_through_their_vaes_channels(flow_model: LoadedModel) -> None:
    channels = int(flow_model.pipeline.vae.config.latent_channels)
    assert projection_for(channels) is not None
    recorder = Recorder([0], every=2)
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0,
                              sampler=flow_model.spec.defaults.sampler)
    flow_model.generate(params, [ImagePrompt("a pony", "", 3)], on_preview=recorder.hook)
    assert [step for step, _ in recorder.got] == [2]
    assert recorder.got[0][1][0].size == (8, 8)
