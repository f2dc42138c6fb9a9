"""Single-file SDXL checkpoints (the original Stability key layout, as Pony V6 XL ships).

diffusers can load such a file offline only when told where the pipeline's
component configs and tokenizers are. This module supplies both without hub
access: SDXL base 1.0's configs are written out from the dicts below, and the
two CLIP tokenizers are built from CLIP's BPE vocabulary, bundled as
``assets/bpe_simple_vocab_16e6.txt.gz`` (the file OpenAI's CLIP and OpenCLIP
ship, MIT-licensed), which tokenises exactly like the hub's tokenizer files.

It also writes a diffusers pipeline back into that layout, so the demo model
can exercise the single-file path end to end.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.runtime.demo_model import SDXL_SCHEDULER_CONFIG

if TYPE_CHECKING:
    import torch

BPE_VOCAB_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = "conditioner.embedders.1.model."

# SDXL base 1.0's diffusers configs (stabilityai/stable-diffusion-xl-base-1.0),
# which fine-tunes like Pony Diffusion V6 XL keep unchanged.
SDXL_BASE_CONFIGS: Mapping[str, Mapping[str, Any]] = {
    "model_index.json": {
        "_class_name": "StableDiffusionXLPipeline",
        "force_zeros_for_empty_prompt": True,
        "add_watermarker": None,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "scheduler/scheduler_config.json": {"_class_name": "EulerDiscreteScheduler", **SDXL_SCHEDULER_CONFIG},
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": 2048,
        "cross_attention_norm": None,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 2816,
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "sample_size": 128,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": None,
        "use_linear_projection": True,
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 1024,
        "scaling_factor": 0.13025,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    # eos_token_id 2 is the hub's legacy value; transformers reads it as "pool at
    # the highest token id", which is CLIP's end token (49407).
    "text_encoder/config.json": {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "vocab_size": 49408,
    },
    "text_encoder_2/config.json": {
        "architectures": ["CLIPTextModelWithProjection"],
        "model_type": "clip_text_model",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_size": 1280,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 5120,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": 20,
        "num_hidden_layers": 32,
        "pad_token_id": 1,
        "projection_dim": 1280,
        "vocab_size": 49408,
    },
}


def write_sdxl_config_folder(path: Path) -> None:
    """Write SDXL base 1.0's component configs (no weights, no tokenizers) under ``path``."""
    for relative, config in SDXL_BASE_CONFIGS.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2) + "\n")


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    with gzip.open(BPE_VOCAB_PATH, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # The file's first line is a header; CLIP uses the first 49152 - 256 - 2 merges,
    # leaving room for 256 byte symbols, their 256 end-of-word forms and 2 specials.
    merges = tuple((a, b) for a, b in (line.split() for line in lines[1 : 49152 - 256 - 2 + 1]))
    symbols = list(bytes_to_unicode().values())
    tokens = [
        *symbols,
        *(s + "</w>" for s in symbols),
        *(a + b for a, b in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    return {token: index for index, token in enumerate(tokens)}, merges


def sdxl_clip_tokenizers() -> tuple[Any, Any]:
    """SDXL's two tokenizers (CLIP-L's, and OpenCLIP-G's which pads with "!") from the bundled vocabulary."""
    from transformers import CLIPTokenizer

    if not BPE_VOCAB_PATH.is_file():
        raise FileNotFoundError(f"CLIP BPE vocabulary missing from the installation: {BPE_VOCAB_PATH}")
    vocab, merges = _clip_bpe()
    # transformers annotates merges as strings, but its BPE backend takes (left, right) pairs.
    pairs: Any = list(merges)
    return (
        CLIPTokenizer(vocab=dict(vocab), merges=pairs, model_max_length=77),
        CLIPTokenizer(vocab=dict(vocab), merges=list(pairs), model_max_length=77, pad_token="!"),
    )


def checkpoint_keys(path: Path) -> set[str]:
    """Tensor names in a .safetensors file, read from its header without loading weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return set(fh.keys())


def has_prefix(keys: set[str], prefix: str) -> bool:
    """Whether any tensor name starts with ``prefix``."""
    return any(k.startswith(prefix) for k in keys)


def is_lora(keys: set[str]) -> bool:
    """Whether these tensor names are a LoRA's (kohya ``lora_unet_*``/``lora_te_*`` or PEFT ``*.lora_A.*``)."""
    return any(k.startswith("lora_") or ".lora_" in k for k in keys)


def describe_layout_problem(keys: set[str]) -> str | None:
    """Why a checkpoint is not a full SDXL base checkpoint in the original layout, or None if it is."""

    def has(prefix: str) -> bool:
        return has_prefix(keys, prefix)

    if not has(UNET_PREFIX):
        if is_lora(keys):
            return "it is a LoRA, not a full model"
        if has("joint_blocks."):
            return "it is a Stable Diffusion 3 checkpoint, not SDXL"
        if has("double_layers.") or has("cond_seq_linear."):
            return "it is an AuraFlow checkpoint, not SDXL"
        if has("down_blocks.") or has("unet."):
            return "it looks like a diffusers-layout file; point the model at the diffusers folder instead"
        return "it has no UNet weights under 'model.diffusion_model.'"
    if has(UNET_PREFIX + "joint_blocks."):
        return "it is a Stable Diffusion 3 checkpoint, not SDXL"
    if has(UNET_PREFIX + "double_layers."):
        return "it is an AuraFlow checkpoint, not SDXL"
    if not has(CLIP_G_PREFIX):
        if has("cond_stage_model."):
            return "it is a Stable Diffusion 1.x/2.x checkpoint, not SDXL"
        return "it has no OpenCLIP-G text encoder under 'conditioner.embedders.1.model.'"
    if not has(CLIP_L_PREFIX):
        return "it has no CLIP-L text encoder (an SDXL refiner checkpoint cannot generate on its own)"
    if not has(VAE_PREFIX):
        return "it has no VAE weights under 'first_stage_model.'"
    return None


def load_single_file_pipeline(path: Path, *, dtype: torch.dtype, config_dir: Path | None = None) -> Any:
    """Load an SDXL ``.safetensors`` checkpoint offline.

    ``config_dir`` is a diffusers folder (model_index.json plus component configs,
    weights not needed) describing the architecture; by default SDXL base 1.0's.
    Its tokenizers are used when it has them, else the bundled CLIP vocabulary.
    """
    from diffusers import StableDiffusionXLPipeline

    extra: dict[str, Any] = {}
    with ExitStack() as stack:
        if config_dir is None:
            config_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ponyserve-sdxl-")))
            write_sdxl_config_folder(config_dir)
        if not ((config_dir / "tokenizer").is_dir() and (config_dir / "tokenizer_2").is_dir()):
            extra["tokenizer"], extra["tokenizer_2"] = sdxl_clip_tokenizers()
        return StableDiffusionXLPipeline.from_single_file(
            str(path),
            config=str(config_dir),
            local_files_only=True,
            dtype=dtype,
            add_watermarker=False,
            **extra,
        )


# --- diffusers -> original layout -------------------------------------------------

_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_ATTENTION_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}

_Renames = tuple[tuple[str, str], ...]


def _rename(rest: str, renames: _Renames) -> str:
    for old, new in renames:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _apply_prefix_map(
    state_dict: Mapping[str, torch.Tensor],
    prefixes: Mapping[str, tuple[str, _Renames]],
    what: str,
    *,
    strict: bool = False,
) -> dict[str, torch.Tensor]:
    """Rename every key by its longest matching prefix, then by that prefix's renames.

    ``strict``: a key whose prefix has renames must match one of them (where the
    original layout renames every tensor under a prefix, an unmatched one would
    otherwise be written under a name no loader reads).
    """
    ordered = sorted(prefixes, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        prefix = next((p for p in ordered if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"{what}: no original-layout name for {key!r}")
        target, renames = prefixes[prefix]
        rest = key[len(prefix) :]
        if strict and renames and not any(rest.startswith(old) for old, _ in renames):
            raise ValueError(f"{what}: no original-layout name for {key!r}")
        out[target + _rename(rest, renames)] = tensor
    return out


def _unet_to_original(unet: Any) -> dict[str, torch.Tensor]:
    config = unet.config
    per_level = config.layers_per_block
    if not isinstance(per_level, int):
        raise ValueError("only a UNet with the same layers_per_block at every level can be exported")
    levels = len(config.block_out_channels)
    prefixes: dict[str, tuple[str, _Renames]] = {k: (v, ()) for k, v in _UNET_FIXED.items()}
    for level in range(levels):
        for layer in range(per_level):
            block = 1 + level * (per_level + 1) + layer
            prefixes[f"down_blocks.{level}.resnets.{layer}."] = (f"input_blocks.{block}.0.", _RESNET_RENAMES)
            prefixes[f"down_blocks.{level}.attentions.{layer}."] = (f"input_blocks.{block}.1.", ())
        downsample = 1 + level * (per_level + 1) + per_level
        prefixes[f"down_blocks.{level}.downsamplers.0.conv."] = (f"input_blocks.{downsample}.0.op.", ())
    prefixes["mid_block.resnets.0."] = ("middle_block.0.", _RESNET_RENAMES)
    prefixes["mid_block.attentions.0."] = ("middle_block.1.", ())
    prefixes["mid_block.resnets.1."] = ("middle_block.2.", _RESNET_RENAMES)
    for level, block_type in enumerate(config.up_block_types):
        has_attention = "CrossAttn" in block_type
        for layer in range(per_level + 1):
            block = level * (per_level + 1) + layer
            prefixes[f"up_blocks.{level}.resnets.{layer}."] = (f"output_blocks.{block}.0.", _RESNET_RENAMES)
            prefixes[f"up_blocks.{level}.attentions.{layer}."] = (f"output_blocks.{block}.1.", ())
        last = level * (per_level + 1) + per_level
        prefixes[f"up_blocks.{level}.upsamplers.0.conv."] = (
            f"output_blocks.{last}.{2 if has_attention else 1}.conv.",
            (),
        )
    converted = _apply_prefix_map(unet.state_dict(), prefixes, "unet")
    return {UNET_PREFIX + k: v for k, v in converted.items()}


def _vae_to_original(vae: Any) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    prefixes: dict[str, tuple[str, _Renames]] = {
        f"{part}.{name}": (f"{part}.{name}", ())
        for part in ("encoder", "decoder")
        for name in ("conv_in.", "conv_out.")
    }
    prefixes.update(
        {
            "encoder.conv_norm_out.": ("encoder.norm_out.", ()),
            "decoder.conv_norm_out.": ("decoder.norm_out.", ()),
            "quant_conv.": ("quant_conv.", ()),
            "post_quant_conv.": ("post_quant_conv.", ()),
        }
    )
    for part in ("encoder", "decoder"):
        for index in range(2):
            prefixes[f"{part}.mid_block.resnets.{index}."] = (f"{part}.mid.block_{index + 1}.", ())
        prefixes[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", _VAE_ATTENTION_RENAMES)
    for level in range(levels):
        prefixes[f"encoder.down_blocks.{level}.resnets."] = (f"encoder.down.{level}.block.", ())
        prefixes[f"encoder.down_blocks.{level}.downsamplers.0.conv."] = (f"encoder.down.{level}.downsample.conv.", ())
        # The original decoder numbers its levels from the bottom, diffusers from the top.
        original = levels - 1 - level
        prefixes[f"decoder.up_blocks.{level}.resnets."] = (f"decoder.up.{original}.block.", ())
        prefixes[f"decoder.up_blocks.{level}.upsamplers.0.conv."] = (f"decoder.up.{original}.upsample.conv.", ())
    converted = _apply_prefix_map(vae.state_dict(), prefixes, "vae")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in converted.items():
        key = key.replace(".conv_shortcut.", ".nin_shortcut.")
        # The original attention projections are 1x1 convolutions.
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + key] = tensor
    return out


def _clip_l_to_original(text_encoder: Any, prefix: str = CLIP_L_PREFIX) -> dict[str, torch.Tensor]:
    """A CLIP text model under ``prefix`` in Hugging Face's own layout (SDXL's CLIP-L, SD3's CLIP-L and -G)."""
    # transformers >= 5.6 dropped CLIPTextModel's "text_model." level; the original keeps it.
    # A with-projection model's projection sits beside text_model, not inside it.
    out: dict[str, torch.Tensor] = {}
    for key, tensor in text_encoder.state_dict().items():
        name = key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key
        out[prefix + name] = tensor
    return out


_OPEN_CLIP_LAYER_RENAMES = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
)


def _clip_g_to_original(text_encoder_2: Any) -> dict[str, torch.Tensor]:
    import torch

    state = text_encoder_2.state_dict()
    out: dict[str, torch.Tensor] = {}
    layer_key = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)$")
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = tensor
        elif key == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = tensor
        elif key.startswith("text_model.final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = tensor
        elif match := layer_key.match(key):
            layer, rest = int(match.group(1)), match.group(2)
            projection = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if projection:
                qkv.setdefault((layer, projection.group(2)), {})[projection.group(1)] = tensor
            else:
                out[f"transformer.resblocks.{layer}.{_rename(rest, _OPEN_CLIP_LAYER_RENAMES)}"] = tensor
        elif key == "text_model.embeddings.position_ids":
            continue
        else:
            raise ValueError(f"text_encoder_2: no original-layout name for {key!r}")
    # OpenCLIP keeps q, k and v as one stacked in_proj tensor.
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {CLIP_G_PREFIX + k: v for k, v in out.items()}


def original_state_dict(pipe: Any) -> dict[str, torch.Tensor]:
    """An SDXL pipeline's weights under the original (Stability ``sgm``) tensor names."""
    return {
        **_unet_to_original(pipe.unet),
        **_vae_to_original(pipe.vae),
        **_clip_l_to_original(pipe.text_encoder),
        **_clip_g_to_original(pipe.text_encoder_2),
    }


def write_checkpoint(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Save tensors as one ``.safetensors`` file (contiguous CPU copies, as safetensors requires)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def export_single_file(pipe: Any, path: Path) -> None:
    """Save an SDXL pipeline as one ``.safetensors`` checkpoint in the original layout."""
    write_checkpoint(original_state_dict(pipe), path)
