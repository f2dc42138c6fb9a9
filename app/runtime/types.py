"""Plain values exchanged between the worker and the runtime; importable without torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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


class GenerationCancelled(Exception):
    """The step callback asked to stop; no images were produced."""


class RuntimeModelError(Exception):
    """A model is missing, unreadable or not a checkpoint this runtime can serve."""
