"""The built-in demo models: tiny, randomly initialised pipelines of each supported family.

They exist so the service, its tests and a first-time operator can run the real
loading and generation code paths without downloading gigabytes of weights.
The images they make are structured noise; the point is the plumbing. SDXL is
the default; ``family="sd3"`` and ``family="auraflow"`` build the same-shaped
stand-ins for those architectures (MMDiT transformers, T5-family encoders).
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
import threading
from pathlib import Path
from typing import Any

from app.runtime.progress import disable_library_progress_bars

# Bumped whenever the architecture or the tokenizer changes, so a folder written
# by an older release is rebuilt instead of loaded with a stale layout.
DEMO_MODEL_VERSION = 1
_FAMILY_VERSIONS = {"sdxl": DEMO_MODEL_VERSION, "sd3": 2, "auraflow": 1}
_MARKER = "ponyserve-demo.json"
# Weights are drawn from torch's process-wide RNG, so two builds in one process
# must not interleave or neither would be reproducible.
_BUILD_LOCK = threading.Lock()

# Both text encoders are tiny but deep enough that CLIP skip values up to this
# can be exercised; real SDXL has 12 (CLIP-L) and 32 (OpenCLIP-G) layers.
_TEXT_LAYERS = 4
# The widths must differ, as 768 and 1280 do in SDXL: diffusers' single-file
# loader tells the two encoders apart by their embedding width.
_TEXT_HIDDEN = 32
_TEXT_HIDDEN_2 = 48
_TIME_EMBED_DIM = 8
_MAX_TOKENS = 77
# SD3 pads the concatenated CLIP states (32 + 48) to T5's width, which must be larger.
_T5_HIDDEN = 96
# The transformers' position grids cover 64 patches per side: 1024 pixels at patch 2, VAE factor 8.
_POSITION_GRID = 64

# Stable Diffusion 3.5's and AuraFlow 0.3's scheduler configs (flow matching; only the shift differs).
SD3_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}
AURAFLOW_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.73}

# Stable Diffusion XL base 1.0's scheduler config, which Pony Diffusion V6 XL keeps.
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "clip_sample": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


def demo_model_exists(path: Path, family: str = "sdxl") -> bool:
    """True when ``path`` holds a complete ``family`` demo model written by this release."""
    marker = path / _MARKER
    if not (path / "model_index.json").is_file() or not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict)
        and info.get("family", "sdxl") == family
        and info.get("version") == _FAMILY_VERSIONS.get(family)
    )


def write_demo_model(path: Path, seed: int = 0, *, family: str = "sdxl") -> None:
    """Write the ``family`` demo pipeline as a diffusers folder at ``path``, replacing what is there.

    The same ``seed`` always yields the same weights. The folder appears at
    ``path`` complete or not at all: it is written next to it and renamed into place.
    """
    if family not in _FAMILY_VERSIONS:
        raise ValueError(f"no demo model for family {family!r}; expected one of {', '.join(_FAMILY_VERSIONS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    disable_library_progress_bars()
    try:
        pipe = build_demo_pipeline(seed, family=family)
        pipe.save_pretrained(staging, safe_serialization=True)
        if family == "sdxl":
            from app.runtime.demo_lora import write_demo_lora

            write_demo_lora(staging, pipe)
        marker = {"version": _FAMILY_VERSIONS[family], "family": family, "seed": seed}
        (staging / _MARKER).write_text(json.dumps(marker) + "\n")
        _move_into_place(staging, path, family)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, path: Path, family: str) -> None:
    try:
        os.rename(staging, path)
        return
    except OSError:
        if not path.exists():
            raise
    # rename() cannot replace a non-empty directory, so the old folder steps
    # aside first; a reader sees either the old model, nothing, or the new one.
    retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    try:
        os.rename(path, retired / path.name)
        os.rename(staging, path)
    except OSError:
        # Another process writing the same demo model got there first; its
        # folder is as good as ours.
        if not demo_model_exists(path, family):
            raise
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def byte_level_clip_tokenizer(*, pad_token: str = "<|endoftext|>") -> Any:
    """A CLIP tokenizer over bytes only: it can encode any text in 256 + 256 + 2 symbols.

    Real CLIP has 49,408 tokens from 48,894 merges; without merges, every word
    becomes its bytes, the last one carrying CLIP's ``</w>`` end-of-word suffix.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token=pad_token, model_max_length=_MAX_TOKENS)


def t5_tokenizer() -> Any:
    """A T5 (SentencePiece unigram) tokenizer over printable ASCII, built in code, no files needed.

    Each character is a piece, with a word-initial ("▁x") form as in T5's
    vocabulary; other characters become ``<unk>``, as with the real T5 tokenizer.
    """
    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("\u2581", -2.0),
        *((c, -5.0) for c in chars),
        *(("\u2581" + c, -4.0) for c in chars),
    ]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def build_demo_pipeline(seed: int = 0, *, family: str = "sdxl") -> Any:
    """The ``family`` demo pipeline in memory, on CPU in float32."""
    builders = {"sdxl": _build_sdxl, "sd3": _build_sd3, "auraflow": _build_auraflow}
    if family not in builders:
        raise ValueError(f"no demo model for family {family!r}; expected one of {', '.join(builders)}")
    import torch

    # fork_rng keeps the caller's global RNG untouched while seeding ours.
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[family]()


def _clip_config(tokenizer: Any, hidden: int, hidden_act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=hidden,
        num_hidden_layers=_TEXT_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=_MAX_TOKENS,
        hidden_act=hidden_act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_vae(*, latent_channels: int, scaling_factor: float, shift_factor: float | None, force_upcast: bool) -> Any:
    from diffusers import AutoencoderKL

    # Four blocks give the real VAE's scale factor of 8; with fewer, latents
    # would be larger and the denoiser far slower for the same image size.
    # SD3's VAE (shift_factor set) has no quant convolutions, SDXL's has them.
    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=512,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=shift_factor is None,
        use_post_quant_conv=shift_factor is None,
        force_upcast=force_upcast,
    )
    return vae.eval()


def _t5_config(tokenizer: Any, d_model: int) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": d_model // 4,
        "d_ff": 2 * d_model,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }


def _build_sdxl() -> Any:
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    # SDXL's second tokenizer pads with "!" rather than the end token; keeping
    # that quirk makes the demo tokenise the way the real model does.
    tokenizer = byte_level_clip_tokenizer()
    tokenizer_2 = byte_level_clip_tokenizer(pad_token="!")
    # Cross-attention sees both encoders' hidden states side by side, and the
    # "text_time" embedding takes the pooled projection plus six 8-dim time ids,
    # exactly as in SDXL (2048 = 768 + 1280 and 2816 = 1280 + 6 * 256 there).
    unet: Any = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        # Attention only at the lower resolution: at full latent resolution it
        # dominates CPU time (quadratic in the number of latent pixels).
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 1),
        cross_attention_dim=_TEXT_HIDDEN + _TEXT_HIDDEN_2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=_TEXT_HIDDEN_2 + 6 * _TIME_EMBED_DIM,
        norm_num_groups=8,
    )
    vae = _tiny_vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, force_upcast=True)
    text_encoder = CLIPTextModel(_clip_config(tokenizer, _TEXT_HIDDEN, "quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer, _TEXT_HIDDEN_2, "gelu"))
    scheduler = EulerAncestralDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _build_sd3() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    tokenizer = byte_level_clip_tokenizer()
    tokenizer_2 = byte_level_clip_tokenizer(pad_token="!")
    tokenizer_3 = t5_tokenizer()
    # As in SD3: joint attention over T5's width (4096 there), the pooled vector is
    # both CLIP projections side by side (768 + 1280), 16 latent channels.
    transformer: Any = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=_T5_HIDDEN,
        caption_projection_dim=32,
        pooled_projection_dim=_TEXT_HIDDEN + _TEXT_HIDDEN_2,
        pos_embed_max_size=_POSITION_GRID,
    )
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, _TEXT_HIDDEN, "quick_gelu"))
    # SD3 pools CLIP-L unprojected: its checkpoints carry no CLIP-L projection and
    # diffusers models it as an identity matrix, so the demo does too (and its
    # single-file export then loads back to the same weights).
    with torch.no_grad():
        text_encoder.text_projection.weight.copy_(torch.eye(_TEXT_HIDDEN))
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG),
        vae=_tiny_vae(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, force_upcast=False),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer, _TEXT_HIDDEN_2, "gelu")).eval(),
        tokenizer_2=tokenizer_2,
        text_encoder_3=T5EncoderModel(T5Config(**_t5_config(tokenizer_3, _T5_HIDDEN))).eval(),
        tokenizer_3=tokenizer_3,
    )


def _build_auraflow() -> Any:
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = t5_tokenizer()
    # One joint (MMDiT) and one single-stream layer, as AuraFlow stacks 4 and 32; the
    # position embedding is a flat table of grid x grid patches.
    transformer: Any = AuraFlowTransformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=_TEXT_HIDDEN,
        caption_projection_dim=32,
        pos_embed_max_size=_POSITION_GRID * _POSITION_GRID,
    )
    return AuraFlowPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(UMT5Config(**_t5_config(tokenizer, _TEXT_HIDDEN))).eval(),
        # AuraFlow decodes with the SDXL VAE.
        vae=_tiny_vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, force_upcast=False),
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(AURAFLOW_SCHEDULER_CONFIG),
    )
