"""Which image sizes a model accepts; pure functions the API calls before anything is queued."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from app.runtime.families import family_traits

if TYPE_CHECKING:
    from app.config import ModelSpec

# Sizes that are multiples of 8 (or 16) rarely hit a ratio exactly: 1344x768 is 1.75,
# "16:9" is 1.778. Within this relative distance a size counts as that ratio.
ASPECT_RATIO_TOLERANCE = 0.02

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,4}(?:\.\d{1,4})?)\s*[:/]\s*(\d{1,4}(?:\.\d{1,4})?)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``"832x1216"`` -> ``(832, 1216)``; ``ValueError`` for anything else."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size like '1024x1024'")
    return int(match.group(1)), int(match.group(2))


def parse_aspect_ratio(text: str) -> float:
    """``"13:19"`` -> width / height; ``ValueError`` for anything else."""
    match = _RATIO.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an aspect ratio like '16:9'")
    width, height = float(match.group(1)), float(match.group(2))
    if width <= 0 or height <= 0:
        raise ValueError(f"{text!r} is not an aspect ratio like '16:9'")
    return width / height


def check_size(spec: ModelSpec, width: int, height: int, *, restrict: bool = True) -> str | None:
    """Why ``spec`` cannot render ``width`` x ``height``, as a message for the caller, or None if it can.

    Checks the family's size multiple (8 for SDXL, 16 for SD3 and AuraFlow),
    the model's min/max width and height and, with ``restrict``, its
    ``allowed_sizes`` and ``allowed_aspect_ratios`` (a size passes when it
    matches either list).
    """
    multiple = family_traits(spec.family).size_multiple
    if width % multiple or height % multiple:
        return f"width and height must be multiples of {multiple} for model '{spec.name}', got {width}x{height}"
    if not spec.min_width <= width <= spec.max_width:
        return f"width must be between {spec.min_width} and {spec.max_width} for model '{spec.name}', got {width}"
    if not spec.min_height <= height <= spec.max_height:
        return f"height must be between {spec.min_height} and {spec.max_height} for model '{spec.name}', got {height}"
    if not restrict or (spec.allowed_sizes is None and spec.allowed_aspect_ratios is None):
        return None
    sizes = [parse_size(text) for text in spec.allowed_sizes or ()]
    if (width, height) in sizes:
        return None
    ratio = width / height
    for text in spec.allowed_aspect_ratios or ():
        wanted = parse_aspect_ratio(text)
        if abs(ratio - wanted) <= ASPECT_RATIO_TOLERANCE * wanted:
            return None
    offered = [f"{w}x{h}" for w, h in sizes] + [
        f"aspect ratio {text.strip()}" for text in spec.allowed_aspect_ratios or ()
    ]
    return f"size {width}x{height} is not offered by model '{spec.name}'; allowed: {', '.join(offered)}"
