"""Single-file SD3 and AuraFlow checkpoints, written from the tiny demo models and loaded through ``load_model``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from runtime_helpers import assert_images_close, assert_same_weights, flow_spec

from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.single_file import checkpoint_keys, write_checkpoint
from app.runtime.single_file_mmdit import (
    auraflow_layout_problem,
    auraflow_transformer_to_original,
    export_auraflow_single_file,
    export_sd3_single_file,
    sd3_layout_problem,
    sd3_transformer_to_original,
)
from app.runtime.types import GenerationParams, ImagePrompt, RuntimeModelError

PARAMS = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
PROMPT = [ImagePrompt("a pony in a field", "blurry", 7)]


def _copy_without_weights(source: Path, target: Path, *, keep: tuple[str, ...] = ()) -> Path:
    """A copy of a diffusers folder without the weights of components not in ``keep``."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder).name in keep:
            return []
        return [name for name in names if name.endswith(".safetensors")]

    shutil.copytree(source, target, ignore=ignore)
    return target


def _assert_same_model(single: LoadedModel, folder: LoadedModel) -> None:
    for name, module in single.pipeline.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        assert_same_weights(module, getattr(folder.pipeline, name), name)
    # Same weights, same seed, another load path: the same image up to CPU rounding.
    assert_images_close(single.generate(PARAMS, PROMPT)[0], folder.generate(PARAMS, PROMPT)[0])


@pytest.fixture(scope="module")
def sd3_folder(runtime_family_models: dict[str, LoadedModel]) -> LoadedModel:
    return runtime_family_models["sd3"]


@pytest.fixture(scope="module")
def auraflow_folder(runtime_family_models: dict[str, LoadedModel]) -> LoadedModel:
    return runtime_family_models["auraflow"]


@pytest.fixture(scope="module")
def sd3_files(
    sd3_folder: LoadedModel, runtime_family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The SD3 demo as Stability ships its variants, plus a config folder without any weights."""
    root = tmp_path_factory.mktemp("sd3-single")
    files = {"full": root / "sd3.safetensors", "clips": root / "sd3_incl_clips.safetensors"}
    export_sd3_single_file(sd3_folder.pipeline, files["full"])
    export_sd3_single_file(sd3_folder.pipeline, files["clips"], t5=False)
    files["bare"] = root / "sd3_mmdit_vae.safetensors"
    export_sd3_single_file(sd3_folder.pipeline, files["bare"], clips=False, t5=False)
    files["config"] = _copy_without_weights(runtime_family_dirs["sd3"], root / "config")
    return files


@pytest.fixture(scope="module")
def auraflow_files(
    auraflow_folder: LoadedModel, runtime_family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The AuraFlow transformer with ComfyUI's prefix and bare, and a folder with every weight but its."""
    root = tmp_path_factory.mktemp("auraflow-single")
    files = {"comfyui": root / "aura_flow_comfyui.safetensors", "bare": root / "aura_flow_bare.safetensors"}
    export_auraflow_single_file(auraflow_folder.pipeline.transformer, files["comfyui"])
    export_auraflow_single_file(auraflow_folder.pipeline.transformer, files["bare"], prefix="")
    source = runtime_family_dirs["auraflow"]
    files["config"] = _copy_without_weights(source, root / "config", keep=("vae", "text_encoder"))
    files["configs_only"] = _copy_without_weights(source, root / "configs-only")
    return files


# --- SD3 ------------------------------------------------------------------------


def test_sd3_export_uses_stabilitys_layout(sd3_files: dict[str, Path]) -> None:
    keys = checkpoint_keys(sd3_files["full"])
    assert sd3_layout_problem(keys) is None
    assert {key.split(".", 1)[0] for key in keys} == {"model", "first_stage_model", "text_encoders"}
    assert "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight" in keys
    assert "model.diffusion_model.final_layer.adaLN_modulation.1.weight" in keys
    assert "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert "text_encoders.clip_g.transformer.text_projection.weight" in keys
    assert "text_encoders.t5xxl.transformer.shared.weight" in keys
    assert not any(key.startswith("text_encoders.t5xxl.") for key in checkpoint_keys(sd3_files["clips"]))


def test_sd3_single_file_serves_the_same_model_as_its_folder(
    sd3_files: dict[str, Path], sd3_folder: LoadedModel
) -> None:
    # The config folder holds configs and tokenizers only: every weight comes from the file.
    spec = flow_spec("sd3-single", "sd3", sd3_files["full"], config=sd3_files["config"])
    _assert_same_model(load_model(spec, "cpu"), sd3_folder)


def test_sd3_without_t5_runs_on_clip_alone(sd3_files: dict[str, Path]) -> None:
    spec = flow_spec("sd3-clips", "sd3", sd3_files["clips"], config=sd3_files["config"])
    model = load_model(spec, "cpu")
    assert model.pipeline.text_encoder_3 is None and model.pipeline.tokenizer_3 is None
    assert model.generate(PARAMS, PROMPT)[0].size == (64, 64)


def test_sd3_components_missing_from_the_file_come_from_the_config_folder(
    sd3_files: dict[str, Path], sd3_folder: LoadedModel, runtime_family_dirs: dict[str, Path]
) -> None:
    # A file with the MMDiT and VAE only, against a folder that has the text encoders (T5 too).
    spec = flow_spec("sd3-bare", "sd3", sd3_files["bare"], config=runtime_family_dirs["sd3"])
    _assert_same_model(load_model(spec, "cpu"), sd3_folder)


def test_sd3_components_missing_everywhere_are_named(sd3_files: dict[str, Path]) -> None:
    spec = flow_spec("sd3-bare", "sd3", sd3_files["bare"], config=sd3_files["config"])
    with pytest.raises(RuntimeModelError, match=r"lacks text_encoder/ weights \(the checkpoint has no CLIP-L") as info:
        load_model(spec, "cpu")
    assert "text_encoder_2/ weights" in str(info.value)


def test_sd3_single_file_needs_a_config_folder(sd3_files: dict[str, Path]) -> None:
    with pytest.raises(RuntimeModelError, match="Stable Diffusion 3 single-file checkpoints need `config`"):
        load_model(flow_spec("sd3-single", "sd3", sd3_files["full"]), "cpu")


def test_sd3_writer_inverts_diffusers_converter_for_sd35_features() -> None:
    """Dual attention and QK norms (SD3.5), which the demo model lacks, survive the round trip exactly."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    torch.manual_seed(0)
    transformer: Any = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        pos_embed_max_size=8,
        dual_attention_layers=(0, 1),
        qk_norm="rms_norm",
    )
    original = {"model.diffusion_model." + k: v for k, v in sd3_transformer_to_original(transformer).items()}
    assert "model.diffusion_model.joint_blocks.1.x_block.attn2.ln_q.weight" in original
    converted = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    expected = transformer.state_dict()
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


# --- AuraFlow -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["comfyui", "bare"])
def test_auraflow_single_file_serves_the_same_model_as_its_folder(
    auraflow_files: dict[str, Path], auraflow_folder: LoadedModel, layout: str
) -> None:
    keys = checkpoint_keys(auraflow_files[layout])
    assert auraflow_layout_problem(keys) is None
    assert ("model.diffusion_model.cond_seq_linear.weight" in keys) == (layout == "comfyui")
    spec = flow_spec("af-single", "auraflow", auraflow_files[layout], config=auraflow_files["config"])
    _assert_same_model(load_model(spec, "cpu"), auraflow_folder)


def test_auraflow_all_in_one_file_ignores_its_vae_and_text_encoder(
    auraflow_files: dict[str, Path], auraflow_folder: LoadedModel, tmp_path: Path
) -> None:
    # ComfyUI's all-in-one files also carry a VAE and a text encoder; the config folder's are served.
    tensors = auraflow_transformer_to_original(auraflow_folder.pipeline.transformer)
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.zeros(3, 3)
    tensors["text_encoders.pile_t5xl.transformer.shared.weight"] = torch.zeros(3, 3)
    path = tmp_path / "aura_flow_all_in_one.safetensors"
    write_checkpoint(tensors, path)
    spec = flow_spec("af-all", "auraflow", path, config=auraflow_files["config"])
    _assert_same_model(load_model(spec, "cpu"), auraflow_folder)


def test_auraflow_single_file_needs_a_config_folder_with_weights(auraflow_files: dict[str, Path]) -> None:
    with pytest.raises(RuntimeModelError, match="hold only the transformer"):
        load_model(flow_spec("af", "auraflow", auraflow_files["comfyui"]), "cpu")
    spec = flow_spec("af", "auraflow", auraflow_files["comfyui"], config=auraflow_files["configs_only"])
    with pytest.raises(RuntimeModelError, match=r"lacks text_encoder/ weights; vae/ weights"):
        load_model(spec, "cpu")


# --- files that are not checkpoints of the family --------------------------------


def test_other_families_files_are_refused_with_what_they_are(
    sd3_files: dict[str, Path], auraflow_files: dict[str, Path], runtime_demo_checkpoint: Path
) -> None:
    cases = [
        (
            "sd3",
            auraflow_files["comfyui"],
            sd3_files["config"],
            "not a Stable Diffusion 3 checkpoint: it is an AuraFlow",
        ),
        (
            "auraflow",
            sd3_files["full"],
            auraflow_files["config"],
            "not an AuraFlow checkpoint: it is a Stable Diffusion 3",
        ),
        ("sd3", runtime_demo_checkpoint, None, "it is a Stable Diffusion XL checkpoint"),
        ("auraflow", runtime_demo_checkpoint, None, "it is a Stable Diffusion XL checkpoint"),
    ]
    for family, path, config, message in cases:
        with pytest.raises(RuntimeModelError, match=message):
            load_model(flow_spec("wrong", family, path, config=config), "cpu")


def test_config_folder_of_another_family_is_refused(
    sd3_files: dict[str, Path], auraflow_files: dict[str, Path]
) -> None:
    spec = flow_spec("wrong", "sd3", sd3_files["full"], config=auraflow_files["config"])
    with pytest.raises(RuntimeModelError, match="describes a AuraFlowPipeline pipeline, not a Stable Diffusion 3 one"):
        load_model(spec, "cpu")


def test_lora_and_diffusers_layout_files_are_explained(
    tmp_path: Path, sd3_files: dict[str, Path], auraflow_folder: LoadedModel
) -> None:
    lora = tmp_path / "style_lora.safetensors"
    write_checkpoint({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.zeros(2, 2)}, lora)
    diffusers_layout = tmp_path / "diffusion_pytorch_model.safetensors"
    write_checkpoint(auraflow_folder.pipeline.transformer.state_dict(), diffusers_layout)
    for family in ("sd3", "auraflow"):
        with pytest.raises(RuntimeModelError, match="it is a LoRA, not a full model"):
            load_model(flow_spec("lora", family, lora), "cpu")
        with pytest.raises(RuntimeModelError, match="diffusers-layout file"):
            load_model(flow_spec("diffusers", family, diffusers_layout), "cpu")


@pytest.mark.parametrize(
    ("keys", "sd3_reason", "auraflow_reason"),
    [
        ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight"}, "LoRA", "LoRA"),
        ({"model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale"}, "Flux", "Flux"),
        ({"cond_stage_model.transformer.x", "model.diffusion_model.input_blocks.0.0.weight"}, "1.x/2.x", "1.x/2.x"),
        ({"first_stage_model.encoder.conv_in.weight"}, "no MMDiT weights", "no AuraFlow transformer weights"),
        ({"joint_blocks.0.x_block.attn.qkv.weight"}, None, "Stable Diffusion 3"),
    ],
)
def test_layout_problems_are_explained(keys: set[str], sd3_reason: str | None, auraflow_reason: str) -> None:
    sd3_problem = sd3_layout_problem(keys)
    assert sd3_problem is None if sd3_reason is None else sd3_reason in (sd3_problem or "")
    assert auraflow_reason in (auraflow_layout_problem(keys) or "")
