"""Single-file checkpoints of the MMDiT families: Stable Diffusion 3 / 3.5 and AuraFlow.

**SD3.** Stability ships SD3 and 3.5 as one ``.safetensors`` file in the original
key layout: the MMDiT under ``model.diffusion_model.``, the VAE under
``first_stage_model.``, and (depending on the variant) CLIP-L, OpenCLIP-G and
T5-XXL under ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.``. diffusers
converts it with ``StableDiffusion3Pipeline.from_single_file``, but needs a
local diffusers folder (the models file's ``config``) for the component configs,
the scheduler and the three tokenizers: unlike SDXL there is no bundled
default. A component the file lacks comes from that folder when the folder
holds its weights; without T5 in either place the pipeline runs without T5
(``text_encoder_3=None``), as SD3 was trained to allow, at some cost in prompt
following.

**AuraFlow.** AuraFlow files (``aura_flow_0.3.safetensors``, Pony V7's
ComfyUI file) are meant for the transformer only, with bare keys or under
ComfyUI's ``model.diffusion_model.``; everything else (text encoder,
tokenizer, VAE, scheduler) comes from the diffusers folder named by
``config``, which must therefore hold those weights. VAE or text-encoder
tensors that an all-in-one ComfyUI file also carries are ignored, so the
folder's are the ones served.

The writers turn tiny diffusers models back into these layouts (the inverse of
diffusers' converters), so tests can load them through the real path.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.runtime.single_file import (
    UNET_PREFIX,
    VAE_PREFIX,
    _apply_prefix_map,
    _clip_l_to_original,
    _Renames,
    _vae_to_original,
    checkpoint_keys,
    has_prefix,
    is_lora,
    write_checkpoint,
)
from app.runtime.types import RuntimeModelError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Where ComfyUI and Stability put the denoiser (the same prefix as SDXL's UNet).
DIFFUSION_PREFIX = UNET_PREFIX
SD3_CLIP_L_PREFIX = "text_encoders.clip_l.transformer."
SD3_CLIP_G_PREFIX = "text_encoders.clip_g.transformer."
SD3_T5_PREFIX = "text_encoders.t5xxl.transformer."

# The top-level names of AuraFlow's original transformer state dict.
_AURAFLOW_TOP_LEVEL = frozenset(
    {
        "register_tokens",
        "positional_encoding",
        "init_x_linear",
        "cond_seq_linear",
        "t_embedder",
        "double_layers",
        "single_layers",
        "final_linear",
        "modF",
    }
)
# What diffusers' own detection (CHECKPOINT_KEY_NAMES["auraflow"]) requires, without a prefix.
_AURAFLOW_REQUIRED = ("double_layers.0.attn.w2q.weight", "cond_seq_linear.weight", "t_embedder.mlp.0.weight")


# --- what a file is ---------------------------------------------------------------


def _foreign_layout(keys: set[str]) -> str | None:
    """What a checkpoint is when it is recognisably something other than an MMDiT family's file."""

    def has(prefix: str) -> bool:
        return has_prefix(keys, prefix)

    if is_lora(keys):
        return "it is a LoRA, not a full model"
    if has("conditioner.embedders.") or has(DIFFUSION_PREFIX + "input_blocks."):
        if has("cond_stage_model."):
            return "it is a Stable Diffusion 1.x/2.x checkpoint"
        return "it is a Stable Diffusion XL checkpoint (family 'sdxl')"
    if has("cond_stage_model."):
        return "it is a Stable Diffusion 1.x/2.x checkpoint"
    if has("double_blocks.") or has(DIFFUSION_PREFIX + "double_blocks."):
        return "it is a Flux checkpoint"
    if has("transformer_blocks.") or has("joint_transformer_blocks.") or has("transformer.") or has("down_blocks."):
        return "it looks like a diffusers-layout file; point the model at the diffusers folder instead"
    return None


def _is_sd3(keys: set[str]) -> bool:
    return has_prefix(keys, DIFFUSION_PREFIX + "joint_blocks.") or has_prefix(keys, "joint_blocks.")


def _is_auraflow(keys: set[str]) -> bool:
    stripped = {k.removeprefix(DIFFUSION_PREFIX) for k in keys}
    return all(k in stripped for k in _AURAFLOW_REQUIRED)


def sd3_layout_problem(keys: set[str]) -> str | None:
    """Why a checkpoint is not an SD3/3.5 checkpoint in the original layout, or None if it is.

    Only the MMDiT is required of the file itself; whether the other components
    are in it or in the config folder is checked when loading.
    """
    # LoRA first: a LoRA's tensor names may embed the original ones it patches.
    if is_lora(keys):
        return "it is a LoRA, not a full model"
    if _is_sd3(keys):
        return None
    if _is_auraflow(keys):
        return "it is an AuraFlow checkpoint (family 'auraflow')"
    foreign = _foreign_layout(keys)
    if foreign is not None:
        return foreign
    return f"it has no MMDiT weights under '{DIFFUSION_PREFIX}joint_blocks.'"


def auraflow_layout_problem(keys: set[str]) -> str | None:
    """Why a checkpoint is not an AuraFlow transformer in the original layout, or None if it is."""
    # LoRA first: a LoRA's tensor names may embed the original ones it patches.
    if is_lora(keys):
        return "it is a LoRA, not a full model"
    if _is_auraflow(keys):
        return None
    if _is_sd3(keys):
        return "it is a Stable Diffusion 3 checkpoint (family 'sd3')"
    foreign = _foreign_layout(keys)
    if foreign is not None:
        return foreign
    return "it has no AuraFlow transformer weights (double_layers, cond_seq_linear, t_embedder)"


# --- loading ----------------------------------------------------------------------


def _has_weights(folder: Path, component: str) -> bool:
    return any((folder / component).glob("*.safetensors"))


def _component_from_folder(folder: Path, component: str, dtype: torch.dtype) -> Any:
    """Load one component from a diffusers folder, by the class its model_index.json names."""
    index: Any = json.loads((folder / "model_index.json").read_text())
    entry = index.get(component) if isinstance(index, dict) else None
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
        raise RuntimeModelError(f"config folder {folder}: model_index.json names no class for {component!r}")
    library, class_name = entry
    cls = getattr(importlib.import_module(library), class_name)
    return cls.from_pretrained(folder, subfolder=component, dtype=dtype, local_files_only=True, use_safetensors=True)


def _config_required(display_name: str, contents: str) -> RuntimeModelError:
    return RuntimeModelError(
        f"{display_name} single-file checkpoints need `config`: a local diffusers {display_name} folder with {contents}"
    )


def _missing(folder: Path, what: Iterable[str]) -> None:
    lacking = list(what)
    if lacking:
        raise RuntimeModelError(f"config folder {folder} lacks {'; '.join(lacking)}")


def load_sd3_single_file(path: Path, *, dtype: torch.dtype, config_dir: Path | None) -> Any:
    """A ``StableDiffusion3Pipeline`` from one original-layout checkpoint, offline."""
    if config_dir is None:
        raise _config_required(
            "Stable Diffusion 3",
            "model_index.json, the component configs describing the checkpoint's architecture, "
            "the scheduler config and the three tokenizers",
        )
    from diffusers import StableDiffusion3Pipeline

    keys = checkpoint_keys(path)
    lacking = [f"{name}/" for name in ("scheduler", "tokenizer", "tokenizer_2") if not (config_dir / name).is_dir()]
    # Components the file lacks, to load from the folder ourselves: for the VAE and the
    # CLIP encoders diffusers would look in the file regardless (and take CLIP-G for a
    # malformed CLIP-L), and only weights it finds nowhere are a reason to refuse.
    from_folder: list[str] = []
    wanted = (
        ("vae", VAE_PREFIX, "VAE"),
        ("text_encoder", SD3_CLIP_L_PREFIX, "CLIP-L text encoder"),
        ("text_encoder_2", SD3_CLIP_G_PREFIX, "OpenCLIP-G text encoder"),
    )
    for name, prefix, label in wanted:
        if has_prefix(keys, prefix):
            continue
        if _has_weights(config_dir, name):
            from_folder.append(name)
        else:
            lacking.append(f"{name}/ weights (the checkpoint has no {label} under '{prefix}')")
    extra: dict[str, Any] = {}
    if has_prefix(keys, SD3_T5_PREFIX):
        if not (config_dir / "tokenizer_3").is_dir():
            lacking.append("tokenizer_3/ (the checkpoint has T5-XXL, whose tokenizer is not in the file)")
    elif _has_weights(config_dir, "text_encoder_3") and (config_dir / "tokenizer_3").is_dir():
        from_folder.append("text_encoder_3")
    else:
        # The "_incl_clips" variants: SD3 was trained with T5 dropped out, so it still works.
        logger.warning(
            "SD3 checkpoint %s has no T5-XXL text encoder and config folder %s has none either; "
            "serving it with the CLIP encoders only",
            path,
            config_dir,
        )
        extra["text_encoder_3"] = extra["tokenizer_3"] = None
    _missing(config_dir, lacking)
    for name in from_folder:
        extra[name] = _component_from_folder(config_dir, name, dtype)
    pipe = StableDiffusion3Pipeline.from_single_file(
        str(path), config=str(config_dir), local_files_only=True, dtype=dtype, **extra
    )
    if pipe.text_encoder_3 is not None:
        # The file stores T5's token embedding once, as ``shared``; transformers ties the
        # encoder's embedding to it, but diffusers loads tensor by tensor, which leaves the
        # encoder's copy unset. Re-tying restores what from_pretrained would have made.
        pipe.text_encoder_3.tie_weights()
    return pipe


def _auraflow_transformer_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The transformer's tensors, under diffusers' expected bare names, read from the file."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        names = list(fh.keys())
        prefixed = any(name.startswith(DIFFUSION_PREFIX) for name in names)
        for name in names:
            if prefixed and not name.startswith(DIFFUSION_PREFIX):
                continue  # an all-in-one ComfyUI file's VAE or text encoder
            bare = name.removeprefix(DIFFUSION_PREFIX)
            if bare.split(".", 1)[0] in _AURAFLOW_TOP_LEVEL:
                tensors[bare] = fh.get_tensor(name)
    return tensors


def load_auraflow_single_file(path: Path, *, dtype: torch.dtype, config_dir: Path | None) -> Any:
    """An ``AuraFlowPipeline``: the transformer from ``path``, everything else from ``config_dir``."""
    if config_dir is None:
        raise _config_required(
            "AuraFlow",
            "the transformer's config and everything else (text encoder and VAE with their weights, "
            "tokenizer, scheduler): AuraFlow files hold only the transformer",
        )
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel

    lacking = [f"{name}/ weights" for name in ("text_encoder", "vae") if not _has_weights(config_dir, name)]
    lacking += [f"{name}/" for name in ("tokenizer", "scheduler") if not (config_dir / name).is_dir()]
    if not (config_dir / "transformer" / "config.json").is_file():
        lacking.append("transformer/config.json (the architecture of the checkpoint's transformer)")
    _missing(config_dir, lacking)
    transformer = AuraFlowTransformer2DModel.from_single_file(
        _auraflow_transformer_tensors(path),
        config=str(config_dir),
        subfolder="transformer",
        local_files_only=True,
        dtype=dtype,
    )
    # Passing the transformer keeps diffusers from reading the folder's own, if it has one.
    return AuraFlowPipeline.from_pretrained(
        config_dir, transformer=transformer, dtype=dtype, local_files_only=True, use_safetensors=True
    )


# --- diffusers -> original layout -------------------------------------------------


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """Swap the two halves of a modulation projection (the original orders shift, scale; diffusers scale, shift)."""
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


_SD3_FIXED: dict[str, str] = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj.": "x_embedder.proj.",
    "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
    "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
    "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
    "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2.",
    "context_embedder.": "context_embedder.",
    "proj_out.": "final_layer.linear.",
    "norm_out.linear.": "final_layer.adaLN_modulation.1.",
}
_SD3_BLOCK_RENAMES: _Renames = (
    ("norm1.linear.", "x_block.adaLN_modulation.1."),
    ("norm1_context.linear.", "context_block.adaLN_modulation.1."),
    ("attn.to_out.0.", "x_block.attn.proj."),
    ("attn.to_add_out.", "context_block.attn.proj."),
    ("attn.norm_q.", "x_block.attn.ln_q."),
    ("attn.norm_k.", "x_block.attn.ln_k."),
    ("attn.norm_added_q.", "context_block.attn.ln_q."),
    ("attn.norm_added_k.", "context_block.attn.ln_k."),
    ("attn2.to_out.0.", "x_block.attn2.proj."),
    ("attn2.norm_q.", "x_block.attn2.ln_q."),
    ("attn2.norm_k.", "x_block.attn2.ln_k."),
    ("ff.net.0.proj.", "x_block.mlp.fc1."),
    ("ff.net.2.", "x_block.mlp.fc2."),
    ("ff_context.net.0.proj.", "context_block.mlp.fc1."),
    ("ff_context.net.2.", "context_block.mlp.fc2."),
)
# The original keeps q, k and v as one stacked qkv projection per stream.
_SD3_QKV = re.compile(r"^transformer_blocks\.(\d+)\.(attn\.to_|attn\.add_|attn2\.to_)([qkv])(?:_proj)?\.(weight|bias)$")
_SD3_QKV_TARGETS = {
    "attn.to_": "x_block.attn.qkv",
    "attn.add_": "context_block.attn.qkv",
    "attn2.to_": "x_block.attn2.qkv",
}


def sd3_transformer_to_original(transformer: Any) -> dict[str, torch.Tensor]:
    """An ``SD3Transformer2DModel``'s weights under the original MMDiT names (no prefix)."""
    import torch

    state = transformer.state_dict()
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _SD3_QKV.match(key)
        if match:
            block, stream, part, kind = match.groups()
            target = f"joint_blocks.{block}.{_SD3_QKV_TARGETS[stream]}.{kind}"
            qkv.setdefault(target, {})[part] = tensor
        else:
            rest[key] = tensor
    prefixes: dict[str, tuple[str, _Renames]] = {k: (v, ()) for k, v in _SD3_FIXED.items()}
    for block in range(int(transformer.config.num_layers)):
        prefixes[f"transformer_blocks.{block}."] = (f"joint_blocks.{block}.", _SD3_BLOCK_RENAMES)
    out = _apply_prefix_map(rest, prefixes, "transformer", strict=True)
    for target, parts in qkv.items():
        out[target] = torch.cat([parts["q"], parts["k"], parts["v"]])
    # diffusers swaps the halves of the final norm's projection and of the last block's
    # context norm (a context-only AdaLayerNormContinuous there); swapping back restores them.
    last = int(transformer.config.num_layers) - 1
    for name in (f"joint_blocks.{last}.context_block.adaLN_modulation.1", "final_layer.adaLN_modulation.1"):
        for kind in ("weight", "bias"):
            if f"{name}.{kind}" in out:
                out[f"{name}.{kind}"] = _swap_halves(out[f"{name}.{kind}"])
    return out


def sd3_original_state_dict(pipe: Any, *, clips: bool = True, t5: bool = True) -> dict[str, torch.Tensor]:
    """An SD3 pipeline's weights as Stability's single file holds them.

    ``clips=False`` leaves out both CLIP encoders, ``t5=False`` leaves out T5
    (the ``_incl_clips`` variant). CLIP-L's projection must be the identity: the
    original has none, and diffusers loads it as an identity matrix.
    """
    import torch

    tensors = {DIFFUSION_PREFIX + k: v for k, v in sd3_transformer_to_original(pipe.transformer).items()}
    tensors.update(_vae_to_original(pipe.vae))
    if clips:
        projection = pipe.text_encoder.text_projection.weight
        if not torch.equal(projection, torch.eye(projection.shape[0], dtype=projection.dtype)):
            raise ValueError("SD3 single files cannot hold a CLIP-L projection other than the identity")
        tensors.update(_clip_l_to_original(pipe.text_encoder, SD3_CLIP_L_PREFIX))
        tensors.update(_clip_l_to_original(pipe.text_encoder_2, SD3_CLIP_G_PREFIX))
    if t5:
        t5_state = pipe.text_encoder_3.state_dict()
        shared = t5_state.get("shared.weight")
        for key, tensor in t5_state.items():
            # The token embedding is tied to ``shared``; the file stores it once, as T5's own do.
            if key == "encoder.embed_tokens.weight" and shared is not None and tensor.data_ptr() == shared.data_ptr():
                continue
            tensors[SD3_T5_PREFIX + key] = tensor
    return tensors


def export_sd3_single_file(pipe: Any, path: Path, *, clips: bool = True, t5: bool = True) -> None:
    """Save an SD3 pipeline as one ``.safetensors`` checkpoint in Stability's layout."""
    write_checkpoint(sd3_original_state_dict(pipe, clips=clips, t5=t5), path)


_AURAFLOW_FIXED: dict[str, str] = {
    "register_tokens": "register_tokens",
    "pos_embed.pos_embed": "positional_encoding",
    "pos_embed.proj.": "init_x_linear.",
    "context_embedder.": "cond_seq_linear.",
    "time_step_proj.linear_1.": "t_embedder.mlp.0.",
    "time_step_proj.linear_2.": "t_embedder.mlp.2.",
    "proj_out.": "final_linear.",
    "norm_out.linear.": "modF.1.",
}
_AURAFLOW_JOINT_RENAMES: _Renames = (
    ("ff.linear_1.", "mlpX.c_fc1."),
    ("ff.linear_2.", "mlpX.c_fc2."),
    ("ff.out_projection.", "mlpX.c_proj."),
    ("ff_context.linear_1.", "mlpC.c_fc1."),
    ("ff_context.linear_2.", "mlpC.c_fc2."),
    ("ff_context.out_projection.", "mlpC.c_proj."),
    ("norm1.linear.", "modX.1."),
    ("norm1_context.linear.", "modC.1."),
    ("attn.to_q.", "attn.w2q."),
    ("attn.to_k.", "attn.w2k."),
    ("attn.to_v.", "attn.w2v."),
    ("attn.to_out.0.", "attn.w2o."),
    ("attn.add_q_proj.", "attn.w1q."),
    ("attn.add_k_proj.", "attn.w1k."),
    ("attn.add_v_proj.", "attn.w1v."),
    ("attn.to_add_out.", "attn.w1o."),
)
_AURAFLOW_SINGLE_RENAMES: _Renames = (
    ("ff.linear_1.", "mlp.c_fc1."),
    ("ff.linear_2.", "mlp.c_fc2."),
    ("ff.out_projection.", "mlp.c_proj."),
    ("norm1.linear.", "modCX.1."),
    ("attn.to_q.", "attn.w1q."),
    ("attn.to_k.", "attn.w1k."),
    ("attn.to_v.", "attn.w1v."),
    ("attn.to_out.0.", "attn.w1o."),
)


def auraflow_transformer_to_original(transformer: Any, prefix: str = DIFFUSION_PREFIX) -> dict[str, torch.Tensor]:
    """An ``AuraFlowTransformer2DModel``'s weights under the original names, each behind ``prefix``.

    The default prefix is ComfyUI's, as its AuraFlow checkpoints have it; ``""``
    gives the bare names of the original AuraFlow release.
    """
    config = transformer.config
    prefixes: dict[str, tuple[str, _Renames]] = {k: (v, ()) for k, v in _AURAFLOW_FIXED.items()}
    for block in range(int(config.num_mmdit_layers)):
        prefixes[f"joint_transformer_blocks.{block}."] = (f"double_layers.{block}.", _AURAFLOW_JOINT_RENAMES)
    for block in range(int(config.num_single_dit_layers)):
        prefixes[f"single_transformer_blocks.{block}."] = (f"single_layers.{block}.", _AURAFLOW_SINGLE_RENAMES)
    out = _apply_prefix_map(transformer.state_dict(), prefixes, "transformer", strict=True)
    for kind in ("weight", "bias"):
        if f"modF.1.{kind}" in out:
            out[f"modF.1.{kind}"] = _swap_halves(out[f"modF.1.{kind}"])
    return {prefix + k: v for k, v in out.items()}


def export_auraflow_single_file(transformer: Any, path: Path, *, prefix: str = DIFFUSION_PREFIX) -> None:
    """Save an AuraFlow transformer as one ``.safetensors`` file in the original layout."""
    write_checkpoint(auraflow_transformer_to_original(transformer, prefix), path)
