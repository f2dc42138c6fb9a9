"""The built-in demo model: a tiny, randomly initialised SDXL-architecture pipeline.

It exists so the service, its tests and a first-time operator can run the real
loading and generation code paths without downloading gigabytes of weights.
The images it makes are structured noise; the point is the plumbing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from app.runtime.progress import disable_library_progress_bars

# Bumped whenever the architecture or the tokenizer changes, so a folder written
# by an older release is rebuilt instead of loaded with a stale layout.
DEMO_MODEL_VERSION = 1
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


def demo_model_exists(path: Path) -> bool:
    """True when ``path`` holds a complete demo model written by this release."""
    marker = path / _MARKER
    if not (path / "model_index.json").is_file() or not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("version") == DEMO_MODEL_VERSION


def write_demo_model(path: Path, seed: int = 0) -> None:
    """Write the demo pipeline as a diffusers folder at ``path``, replacing what is there.

    The same ``seed`` always yields the same weights. The folder appears at
    ``path`` complete or not at all: it is written next to it and renamed into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    disable_library_progress_bars()
    try:
        pipe = build_demo_pipeline(seed)
        pipe.save_pretrained(staging, safe_serialization=True)
        (staging / _MARKER).write_text(json.dumps({"version": DEMO_MODEL_VERSION, "seed": seed}) + "\n")
        _move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, path: Path) -> None:
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
        if not demo_model_exists(path):
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


def build_demo_pipeline(seed: int = 0) -> Any:
    """The demo ``StableDiffusionXLPipeline`` in memory, on CPU in float32."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # SDXL's second tokenizer pads with "!" rather than the end token; keeping
    # that quirk makes the demo tokenise the way the real model does.
    tokenizer = byte_level_clip_tokenizer()
    tokenizer_2 = byte_level_clip_tokenizer(pad_token="!")

    def text_config(hidden: int, hidden_act: str) -> CLIPTextConfig:
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

    # fork_rng keeps the caller's global RNG untouched while seeding ours.
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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
        # Four blocks give the real VAE's scale factor of 8; with fewer, latents
        # would be larger and the UNet far slower for the same image size.
        vae: Any = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=512,
            scaling_factor=0.13025,
            force_upcast=True,
        )
        text_encoder = CLIPTextModel(text_config(_TEXT_HIDDEN, "quick_gelu"))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(_TEXT_HIDDEN_2, "gelu"))

    scheduler = EulerAncestralDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return pipe
