"""Helpers shared by the runtime tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.config import ModelSpec

# Two code paths (a folder vs a single file, a batch vs one image, a padded call) run different
# CPU kernels, and how those round differs between CPU models: on an AMD EPYC the folder and the
# single-file load of the same weights gave images one byte apart, on Intel hosts they matched.
# Rounding moves a few pixels by a level or two of 255. A conversion bug moves far more: on the
# demo model, key and value swapped in one UNet attention moves pixels by 16 levels (mean 2), a
# VAE scaling factor 10 % off by 17 (mean 1.9). Subtler weight errors hide in a tiny random
# model's pixels, which is why weights are compared exactly (``assert_same_weights``).
# Same path, same process, same seed stays bit-exact and is asserted exactly.
MAX_PIXEL_DIFF = 2
MAX_MEAN_PIXEL_DIFF = 0.5


def flow_spec(name: str, family: str, path: Path, **overrides: object) -> ModelSpec:
    """A spec for a tiny flow-matching demo model, sized for fast CPU tests."""
    fields: dict[str, object] = {
        "name": name,
        "family": family,
        "path": path,
        "defaults": {"width": 64, "height": 64, "steps": 2},
        "min_width": 64,
        "min_height": 64,
        "max_width": 1024,
        "max_height": 1024,
        **overrides,
    }
    return ModelSpec.model_validate(fields)


def pixel_difference(a: Image.Image, b: Image.Image) -> np.ndarray:
    """Per-channel absolute difference of two same-sized images, in levels of 255."""
    assert a.size == b.size and a.mode == b.mode, (a.size, a.mode, b.size, b.mode)
    # int16: uint8 subtraction would wrap around instead of going negative.
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))


def assert_images_close(
    actual: Image.Image,
    expected: Image.Image,
    *,
    max_diff: int = MAX_PIXEL_DIFF,
    max_mean_diff: float = MAX_MEAN_PIXEL_DIFF,
) -> None:
    """``actual`` is ``expected`` up to the rounding of another code path (see ``MAX_PIXEL_DIFF``)."""
    diff = pixel_difference(actual, expected)
    worst, mean = int(diff.max()), float(diff.mean())
    assert worst <= max_diff and mean <= max_mean_diff, (
        f"images differ: max {worst} (allowed {max_diff}), mean {mean:.3f} (allowed {max_mean_diff}) of 255"
    )


def assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module, name: str = "") -> None:
    """Bit-identical parameters and buffers under the same names.

    Exact on purpose, unlike images: converting a checkpoint renames, slices, reshapes and
    concatenates tensors but does no arithmetic, so every host must reproduce every bit, and a
    lossy step (say an fp16 round trip) is exactly what this should catch.
    """
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys(), f"{name}: {sorted(a.keys() ^ b.keys())[:5]}"
    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
