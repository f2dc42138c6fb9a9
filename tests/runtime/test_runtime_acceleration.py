"""The GPU speed path, as far as it can run on CPU: buckets, padding, memory format, SDPA, compile wiring."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from runtime_helpers import assert_images_close

from app.config import ModelSpec
from app.runtime.acceleration import (
    attention_processor_names,
    bucket_for,
    channels_last_modules,
    optimize_for_device,
    pad_to_bucket,
)
from app.runtime.demo_model import build_demo_pipeline
from app.runtime.families import adapter_for
from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.types import GenerationParams, ImagePrompt

SMALL = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (8, 8), (9, 9), (20, 20)])
def test_bucket_for(n: int, expected: int) -> None:
    assert bucket_for(n, [1, 2, 4, 8]) == expected
    assert bucket_for(n, [8, 4, 2, 1]) == expected


def test_bucket_for_rejects_empty_calls() -> None:
    with pytest.raises(ValueError):
        bucket_for(0, [1, 2])


def test_pad_to_bucket_repeats_the_last_item() -> None:
    assert pad_to_bucket(["a", "b", "c"], [2, 4]) == ["a", "b", "c", "c"]
    assert pad_to_bucket(["a"], [1, 2]) == ["a"]
    assert pad_to_bucket(["a", "b", "c"], [2]) == ["a", "b", "c"]


def _batch_sizes_seen(module: torch.nn.Module) -> tuple[list[int], Any]:
    seen: list[int] = []

    def hook(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        seen.append(int(sample.shape[0]))

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def test_calls_are_padded_to_their_bucket_and_padding_is_dropped(runtime_model: LoadedModel) -> None:
    bucketed = LoadedModel(runtime_model.spec, "cpu", runtime_model.dtype, runtime_model.pipeline, batch_buckets=[4, 2])
    assert bucketed.batch_buckets == (2, 4)
    assert bucketed.bucket_for(3) == 4
    images = [ImagePrompt("a red pony", "ugly", 11)]
    seen, handle = _batch_sizes_seen(runtime_model.pipeline.unet)
    try:
        [padded] = bucketed.generate(SMALL, images)
    finally:
        handle.remove()
    # Classifier-free guidance doubles the denoiser's batch: 2 images (1 + 1 padding) x 2.
    assert set(seen) == {4}
    [plain] = runtime_model.generate(SMALL, images)
    assert_images_close(padded, plain)


def test_channels_last_only_on_cuda() -> None:
    pipe = build_demo_pipeline(seed=0)
    adapter = adapter_for("sdxl")
    optimize_for_device(pipe, adapter, "cpu")
    assert not pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    # The conversion is a tensor-layout change, so it can be checked on CPU tensors.
    optimize_for_device(pipe, adapter, "cuda:0")
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_transformer_families_put_only_the_vae_in_channels_last(
    runtime_family_models: dict[str, LoadedModel],
) -> None:
    for family, model in runtime_family_models.items():
        modules = channels_last_modules(model.pipeline, adapter_for(family))
        assert modules == [model.pipeline.vae]


def test_attention_runs_on_scaled_dot_product_attention(
    runtime_model: LoadedModel, runtime_family_models: dict[str, LoadedModel]
) -> None:
    for model in (runtime_model, *runtime_family_models.values()):
        names = attention_processor_names(model.pipeline, model.adapter)
        assert names and all(name.endswith("AttnProcessor2_0") for name in names), names


def test_compile_flag_compiles_then_warms_every_bucket(runtime_demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.runtime.pipelines as pipelines

    compiled: list[dict[str, Any]] = []

    def fake_compile(pipe: Any, adapter: Any, *, mode: str, expected_graphs: int) -> None:
        compiled.append(
            {"module": type(getattr(pipe, adapter.denoiser_attr)).__name__, "mode": mode, "graphs": expected_graphs}
        )

    calls: list[tuple[int, int, int]] = []
    real_generate = LoadedModel.generate

    def counting_generate(
        self: LoadedModel, params: GenerationParams, images: Sequence[ImagePrompt], on_step: Any = None
    ) -> list[Any]:
        calls.append((params.width, params.height, len(images)))
        return real_generate(self, params, images, on_step)

    monkeypatch.setattr(pipelines, "compile_denoiser", fake_compile)
    monkeypatch.setattr(LoadedModel, "generate", counting_generate)
    spec = ModelSpec(
        name="compiled",
        path=runtime_demo_dir,
        compile=True,
        compile_batch_sizes=[2, 1],
        compile_mode="max-autotune-no-cudagraphs",
        defaults={"width": 64, "height": 64, "steps": 2},
        allowed_sizes=["64x64", "64x128"],
        min_width=64,
        min_height=64,
    )
    model = load_model(spec, "cpu")
    assert compiled == [{"module": "UNet2DConditionModel", "mode": "max-autotune-no-cudagraphs", "graphs": 4}]
    assert calls == [(64, 64, 1), (64, 64, 2), (64, 128, 1), (64, 128, 2)]
    assert model.batch_buckets == (1, 2)


def test_gpu_benchmark_refuses_to_run_without_a_gpu() -> None:
    script = Path(__file__).resolve().parents[2] / "bench" / "runtime_gpu.py"
    # Hiding every GPU makes this the CPU-only case on any machine.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "no CUDA GPU is available" in done.stderr
    assert done.stdout == ""
