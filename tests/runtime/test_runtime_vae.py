"""Per-model VAE settings: an override folder or file, and the VAE's dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_helpers import assert_images_close, assert_same_weights
from safetensors.torch import save_file

from app.config import ModelSpec
from app.runtime.demo_model import write_demo_model
from app.runtime.encoding import encode_image
from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.samplers import make_scheduler
from app.runtime.single_file import _vae_to_original
from app.runtime.types import GenerationParams, ImagePrompt, RuntimeModelError

SMALL = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
PROMPT = [ImagePrompt("a pony", "", 3)]


@pytest.fixture(scope="module")
def other_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime-vae") / "demo-seed-1"
    write_demo_model(path, seed=1)
    return path


def _spec(path: Path, **fields: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"name": "vae-test", "path": path, "defaults": {"width": 512, "height": 512}, **fields}
    )


def _png(model: LoadedModel) -> bytes:
    return encode_image(model.generate(SMALL, PROMPT)[0], "png", None)


def test_vae_folder_override(runtime_demo_dir: Path, other_demo: Path, runtime_model: LoadedModel) -> None:
    reference = load_model(_spec(other_demo), "cpu").pipeline.vae
    for vae_path in (other_demo / "vae", other_demo):
        model = load_model(_spec(runtime_demo_dir, vae=vae_path), "cpu")
        assert_same_weights(model.pipeline.vae, reference, "vae")
        assert_same_weights(model.pipeline.unet, runtime_model.pipeline.unet, "unet")
    assert _png(model) != _png(runtime_model)


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_vae_single_file_override(runtime_demo_dir: Path, other_demo: Path, tmp_path: Path, layout: str) -> None:
    reference = load_model(_spec(other_demo), "cpu").pipeline.vae
    state = _vae_to_original(reference) if layout == "original" else reference.state_dict()
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = load_model(_spec(runtime_demo_dir, vae=path), "cpu")
    assert_same_weights(model.pipeline.vae, reference, "vae")


def test_bad_vae_overrides_are_model_errors(
    runtime_demo_dir: Path, runtime_family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeModelError, match="does not exist"):
        load_model(_spec(runtime_demo_dir, vae=tmp_path / "absent"), "cpu")
    pickle = tmp_path / "vae.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(RuntimeModelError, match="pickle"):
        load_model(_spec(runtime_demo_dir, vae=pickle), "cpu")
    with pytest.raises(RuntimeModelError, match=r"no config\.json"):
        load_model(_spec(runtime_demo_dir, vae=tmp_path), "cpu")
    # SD3's VAE has 16 latent channels, SDXL's 4.
    with pytest.raises(RuntimeModelError, match="16 latent channels, the model needs 4"):
        load_model(_spec(runtime_demo_dir, vae=runtime_family_dirs["sd3"] / "vae"), "cpu")


def test_vae_dtype_setting(runtime_demo_dir: Path, runtime_model: LoadedModel) -> None:
    assert runtime_model.pipeline.vae.config.force_upcast is False
    half = load_model(_spec(runtime_demo_dir, vae_dtype="bfloat16"), "cpu")
    assert half.pipeline.vae.dtype == torch.bfloat16
    assert half.pipeline.unet.dtype == torch.float32
    assert half.pipeline.vae.config.force_upcast is False
    [image] = half.generate(SMALL, PROMPT)
    [full] = runtime_model.generate(SMALL, PROMPT)
    assert image.size == (64, 64)
    # bf16 decoding rounds, but the picture is the same one.
    assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(full, dtype=np.int16)).mean() < 4
    upcast = load_model(_spec(runtime_demo_dir, vae_dtype="float32", dtype="float32"), "cpu")
    assert upcast.pipeline.vae.config.force_upcast is True
    assert upcast.pipeline.vae.dtype == torch.float32


def test_own_decode_matches_the_pipelines(runtime_model: LoadedModel) -> None:
    pipe = runtime_model.adapter.pipeline_for_call(
        runtime_model.pipeline, make_scheduler("Euler", runtime_model.scheduler_config)
    )
    with torch.inference_mode():
        embeddings = runtime_model._encode_prompts(pipe, SMALL, PROMPT)
        [expected] = pipe(
            **embeddings,
            width=64,
            height=64,
            num_inference_steps=2,
            guidance_scale=5.0,
            generator=[torch.Generator().manual_seed(3)],
            output_type="pil",
        ).images
    [ours] = runtime_model.generate(SMALL, PROMPT)
    assert_images_close(ours, expected)
