"""GPU side of ponyserve: model loading, batched generation, image encoding.

This package imports neither the web framework nor the database. Importing it
(and its ``types``, ``samplers`` and ``encoding`` modules) does not import torch
or diffusers either, so the API process can validate requests with it; the
modules that run models import those libraries inside their functions.
"""

from app.runtime.samplers import SAMPLERS, resolve_sampler, sampler_names
from app.runtime.types import (
    GenerationCancelled,
    GenerationParams,
    ImagePrompt,
    RuntimeModelError,
    StepCallback,
)

__all__ = [
    "SAMPLERS",
    "GenerationCancelled",
    "GenerationParams",
    "ImagePrompt",
    "RuntimeModelError",
    "StepCallback",
    "resolve_sampler",
    "sampler_names",
]
