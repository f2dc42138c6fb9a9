from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from runtime_helpers import assert_images_close, assert_same_weights

from app.config import ModelSpec
from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.single_file import (
    SDXL_BASE_CONFIGS,
    checkpoint_keys,
    describe_layout_problem,
    original_state_dict,
    sdxl_clip_tokenizers,
    write_sdxl_config_folder,
)
from app.runtime.types import GenerationParams, ImagePrompt, RuntimeModelError


def _checkpoint_spec(path: Path) -> ModelSpec:
    return ModelSpec(name="demo-single", path=path, defaults={"width": 512, "height": 512})


def test_export_uses_the_original_sdxl_key_layout(runtime_demo_checkpoint: Path) -> None:
    keys = checkpoint_keys(runtime_demo_checkpoint)
    assert describe_layout_problem(keys) is None
    prefixes = {key.split(".", 1)[0] for key in keys}
    assert prefixes == {"model", "first_stage_model", "conditioner"}
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys


PARAMS = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler a")
PROMPT = [ImagePrompt("a pony", "bad", 3)]


@pytest.fixture
def single(runtime_demo_checkpoint: Path, runtime_demo_dir: Path) -> LoadedModel:
    """The demo model loaded from its single-file export, fresh for each test (one test breaks it)."""
    return load_model(_checkpoint_spec(runtime_demo_checkpoint), "cpu", config_dir=runtime_demo_dir)


def test_single_file_loads_to_the_same_weights_and_pixels(single: LoadedModel, runtime_model: LoadedModel) -> None:
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert_same_weights(getattr(single.pipeline, name), getattr(runtime_model.pipeline, name), name)
    # Same weights, same seed, but another load path: equal up to CPU rounding, not bit for bit.
    assert_images_close(single.generate(PARAMS, PROMPT)[0], runtime_model.generate(PARAMS, PROMPT)[0])


def test_the_pixel_tolerance_still_catches_a_wrong_weight(single: LoadedModel, runtime_model: LoadedModel) -> None:
    # The classic conversion bug: a fused projection split in the wrong order (key and value swapped).
    attention = single.pipeline.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    with torch.no_grad():
        key = attention.to_k.weight.clone()
        attention.to_k.weight.copy_(attention.to_v.weight)
        attention.to_v.weight.copy_(key)
    with pytest.raises(AssertionError, match="images differ"):
        assert_images_close(single.generate(PARAMS, PROMPT)[0], runtime_model.generate(PARAMS, PROMPT)[0])


def test_single_file_against_sdxl_base_configs_fails_cleanly_for_a_tiny_checkpoint(
    runtime_demo_checkpoint: Path,
) -> None:
    # The built-in configs describe full-size SDXL; a tiny checkpoint cannot fit them.
    with pytest.raises(RuntimeModelError, match="cannot load"):
        load_model(_checkpoint_spec(runtime_demo_checkpoint), "cpu")


def test_config_dir_without_model_index_is_rejected(runtime_demo_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeModelError, match=r"model_index\.json"):
        load_model(_checkpoint_spec(runtime_demo_checkpoint), "cpu", config_dir=tmp_path)


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ({"lora_unet_down_blocks_0.alpha"}, "LoRA"),
        ({"down_blocks.0.resnets.0.conv1.weight"}, "diffusers-layout"),
        ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "first_stage_model.x"}, "Stable Diffusion 3"),
        ({"model.diffusion_model.double_layers.0.attn.w2q.weight"}, "AuraFlow"),
        ({"cond_seq_linear.weight", "double_layers.0.attn.w2q.weight"}, "AuraFlow"),
        ({"model.diffusion_model.x", "cond_stage_model.transformer.x"}, "1.x/2.x"),
        ({"model.diffusion_model.x", "conditioner.embedders.0.model.text_projection"}, "OpenCLIP-G"),
        ({"model.diffusion_model.x", "conditioner.embedders.1.model.x"}, "refiner"),
        (
            {"model.diffusion_model.x", "conditioner.embedders.1.model.x", "conditioner.embedders.0.transformer.x"},
            "VAE",
        ),
    ],
)
def test_layout_problems_are_explained(keys: set[str], reason: str) -> None:
    problem = describe_layout_problem(keys)
    assert problem is not None and reason in problem


def test_bundled_vocabulary_tokenizes_like_clip() -> None:
    tokenizer, tokenizer_2 = sdxl_clip_tokenizers()
    # The ids OpenAI's CLIP assigns: <start> a photo of a cat <end>.
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408
    padded = tokenizer_2("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 0 == tokenizer_2.pad_token_id
    assert tokenizer("a cat", padding="max_length", max_length=77).input_ids[-1] == 49407


def test_sdxl_config_folder_is_loadable_by_diffusers(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig

    write_sdxl_config_folder(tmp_path)
    assert StableDiffusionXLPipeline.load_config(tmp_path)["_class_name"] == "StableDiffusionXLPipeline"
    assert UNet2DConditionModel.load_config(tmp_path, subfolder="unet")["cross_attention_dim"] == 2048
    assert AutoencoderKL.load_config(tmp_path, subfolder="vae")["scaling_factor"] == 0.13025
    assert CLIPTextConfig.from_pretrained(tmp_path, subfolder="text_encoder_2").hidden_size == 1280


def test_full_size_layout_round_trips_through_diffusers_converters() -> None:
    """The exporter and the built-in configs agree with diffusers on real SDXL's 2,500 tensor names."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
        infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(name: str) -> dict[str, Any]:
        return {k: v for k, v in SDXL_BASE_CONFIGS[name].items() if not k.startswith("_") and k != "architectures"}

    with init_empty_weights():
        parts = SimpleNamespace(
            unet=UNet2DConditionModel.from_config(config("unet/config.json")),
            vae=AutoencoderKL.from_config(config("vae/config.json")),
            text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder/config.json"))),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2/config.json"))),
        )
    original = original_state_dict(parts)
    assert infer_diffusers_model_type(original) == "xl_base"
    assert sum(t.numel() for t in original.values()) > 3_400_000_000
    assert original["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert original["model.diffusion_model.output_blocks.2.2.conv.weight"].shape == (1280, 1280, 3, 3)

    unet = convert_ldm_unet_checkpoint(original, config("unet/config.json"))
    assert unet.keys() == parts.unet.state_dict().keys()
    vae = convert_ldm_vae_checkpoint(original, config("vae/config.json"))
    assert vae.keys() == parts.vae.state_dict().keys()
    clip_g = convert_open_clip_checkpoint(parts.text_encoder_2, original, prefix="conditioner.embedders.1.model.")
    assert clip_g.keys() == parts.text_encoder_2.state_dict().keys()
    clip_l = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(original).items()}
    assert clip_l.keys() == parts.text_encoder.state_dict().keys()
