"""Plain values exchanged between the worker and the runtime; importable without torch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class LoraUse:
    """One LoRA applied to a pipeline call: its file and its weights on the denoiser and the text encoders
    (A1111's ``<lora:name:te:unet>`` sets them apart; they are usually equal)."""

    name: str
    path: str
    weight: float
    text_encoder_weight: float


@dataclass(frozen=True)
class HiresPass:
    """Hires. fix: after the first pass (at the call's width × height), latents are enlarged to
    ``width`` × ``height`` with a latent ``upscaler`` and refined at ``denoise`` over ``steps``."""

    width: int
    height: int
    denoise: float
    steps: int
    upscaler: str = "Latent"


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
    # The LoRA set of the call, sorted by name: part of what makes jobs batch together.
    loras: tuple[LoraUse, ...] = ()
    # img2img / inpainting: how far from the init images to go (1 = all the way, as text-to-image).
    strength: float | None = None
    hires: HiresPass | None = None


@dataclass(frozen=True)
class ImagePrompt:
    """One image of a pipeline call; with ``init_image`` (already at the call's size) an img2img one,
    with ``mask`` too (white = repaint, same size) an inpainting one. A call's images all have them or none."""

    prompt: str
    negative_prompt: str
    seed: int
    init_image: Image.Image | None = None
    mask: Image.Image | None = None


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
