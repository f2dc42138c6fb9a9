"""Plain values exchanged between the worker and the runtime; importable without torch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class GenerationParams:
    """Everything shared by the images of one pipeline call: jobs batch together only when equal.

    ``clip_skip`` follows A1111's numbering (1 = last CLIP layer, 2 = penultimate);
    None keeps the model family's own choice, which for SDXL is the penultimate layer.
    """

    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str
    clip_skip: int | None = None


@dataclass(frozen=True)
class ImagePrompt:
    """One image of a pipeline call."""

    prompt: str
    negative_prompt: str
    seed: int


# (completed_step, total_steps) -> return False to cancel the whole call.
StepCallback = Callable[[int, int], bool]


@dataclass(frozen=True)
class PreviewHook:
    """Asks a pipeline call for low-resolution previews (``app.runtime.preview``) of some images.

    Both callables run in the pipeline's thread, after each step and before that
    step's ``StepCallback``. ``wanted(completed_step, total_steps)`` returns the
    indices, into the call's images, whose preview is wanted now; an empty answer
    costs nothing more. ``deliver(completed_step, previews)`` then receives one
    small RGB image per wanted index. Keep both quick: the next step waits for them.
    """

    wanted: Callable[[int, int], Collection[int]]
    deliver: Callable[[int, Mapping[int, Image.Image]], None]


class GenerationCancelled(Exception):
    """The step callback asked to stop; no images were produced."""


class RuntimeModelError(Exception):
    """A model is missing, unreadable or not a checkpoint this runtime can serve."""
