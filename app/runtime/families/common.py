"""Pieces more than one family adapter uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.runtime.types import RuntimeModelError


def a1111_to_diffusers_clip_skip(clip_skip: int | None) -> int | None:
    """Translate A1111's CLIP skip (1 = last layer, 2 = penultimate) to diffusers' argument.

    diffusers' SDXL and SD3 ``encode_prompt`` read ``hidden_states[-(clip_skip + 2)]``,
    and ``hidden_states[-2]`` (the penultimate layer, which SDXL and SD3 were
    trained on) when ``clip_skip`` is None. A1111's ``n`` means ``hidden_states[-n]``,
    so the diffusers value is ``n - 2``: 2 -> None (the default), 3 -> 1, and
    1 -> -1, which selects ``hidden_states[-1]``, the last layer before the
    final norm. None (the caller did not ask) keeps the penultimate layer.
    """
    if clip_skip is None or clip_skip == 2:
        return None
    return clip_skip - 2


def pipeline_class_name(path: Path) -> str | None:
    """The ``_class_name`` a diffusers folder's model_index.json declares.

    Raises ``RuntimeModelError`` when the folder has no readable model_index.json.
    """
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise RuntimeModelError(
            f"{path} is a directory without model_index.json; "
            "expected a diffusers pipeline folder or a .safetensors checkpoint"
        )
    try:
        index: Any = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeModelError(f"unreadable {index_path}: {exc}") from exc
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    return class_name if isinstance(class_name, str) else None


def transformer_max_side(pipe: Any, grid_side: int) -> int:
    """Pixels per side a patch transformer covers when its position grid is ``grid_side`` patches wide."""
    return grid_side * int(pipe.transformer.config.patch_size) * int(pipe.vae_scale_factor)
