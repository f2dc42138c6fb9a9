"""The demo LoRA: a tiny random LoRA for the demo SDXL model, written in the kohya/A1111 layout.

That layout (``lora_unet_…`` / ``lora_te1_…`` / ``lora_te2_…`` keys with ``lora_down``, ``lora_up``
and ``alpha``) is what Civitai distributes, so loading it exercises the same conversion path a
real Pony LoRA goes through. Its weights are drawn from a fixed seed: the same file every time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from app.config import demo_lora_path

_RANK = 4
_SEED = 1
# Strong enough that weight 1 visibly changes a 64×64 demo image, as a style LoRA would.
_SCALE = 0.5
# What kohya's trainer adapts in SDXL: attention projections in the UNet, attention and MLP in both text encoders.
_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _kohya_name(module_name: str) -> str:
    # transformers 5 dropped CLIPTextModel's ``text_model`` level; kohya files (and diffusers' converter) keep it.
    return module_name.replace(".", "_")


def demo_lora_state(pipe: Any) -> dict[str, Any]:
    """The demo LoRA's tensors for ``pipe`` (the demo SDXL pipeline), in the kohya layout."""
    import torch

    generator = torch.Generator().manual_seed(_SEED)
    state: dict[str, Any] = {}

    def add(prefix: str, module: torch.nn.Module, targets: tuple[str, ...], *, text: bool) -> None:
        for name, layer in module.named_modules():
            if not isinstance(layer, torch.nn.Linear) or not name.endswith(targets):
                continue
            path = ("text_model_" if text and not name.startswith("text_model") else "") + _kohya_name(name)
            key = f"{prefix}_{path}"
            state[f"{key}.lora_down.weight"] = torch.randn(_RANK, layer.in_features, generator=generator) * _SCALE
            state[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, _RANK, generator=generator) * _SCALE
            state[f"{key}.alpha"] = torch.tensor(float(_RANK))

    add("lora_unet", pipe.unet, _UNET_TARGETS, text=False)
    add("lora_te1", pipe.text_encoder, _TEXT_TARGETS, text=True)
    add("lora_te2", pipe.text_encoder_2, _TEXT_TARGETS, text=True)
    return state


def write_demo_lora(demo_model_path: Path, pipe: Any | None = None) -> Path:
    """Writes the demo LoRA where ``Settings.lora_specs`` looks for it (atomically); returns its path.
    Without ``pipe``, the demo pipeline is rebuilt in memory for its module shapes (seconds)."""
    from safetensors.torch import save_file

    if pipe is None:
        from app.runtime.demo_model import build_demo_pipeline

        pipe = build_demo_pipeline(0)
    target = demo_lora_path(demo_model_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        # One metadata entry only: safetensors writes a map's entries in no fixed order, and the same seed must
        # give the same bytes.
        save_file({k: v.contiguous() for k, v in demo_lora_state(pipe).items()}, staging,
                  metadata={"ss_network_module": "networks.lora"})
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target
