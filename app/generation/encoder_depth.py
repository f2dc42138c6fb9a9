"""How deep a model's CLIP text encoders are, read from its config files without loading weights.

The API process never loads a pipeline, yet must refuse a ``clip_skip`` the worker could not
honour (it would fail the job as a pipeline error after queueing and charging). The depth is
``num_hidden_layers`` of ``text_encoder*/config.json`` in the diffusers folder (or the
checkpoint's ``config`` folder); when no config is readable it is unknown, and the request
schema's ceiling applies.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from app.config import ModelSpec


@lru_cache(maxsize=64)
def _depth(folder: Path) -> int | None:
    depths: list[int] = []
    for name in ("text_encoder", "text_encoder_2"):
        config = folder / name / "config.json"
        try:
            depths.append(int(json.loads(config.read_text())["num_hidden_layers"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    # Both encoders skip the same number of layers, so the shallower one bounds it.
    return min(depths) if depths else None


def max_clip_skip(spec: ModelSpec) -> int | None:
    """The largest A1111 clip_skip ``spec``'s text encoders allow, or None when not knowable here."""
    folder = spec.config if spec.config is not None else spec.path
    return _depth(folder) if folder.is_dir() else None
