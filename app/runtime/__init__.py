"""GPU side of ponyserve: model loading, batched generation, image encoding.

This package imports neither the web framework nor the database. Importing it
(and its ``types``, ``samplers``, ``sizes``, ``families``, ``oom`` and ``encoding``
modules) does not import torch or diffusers either, so the API process can validate requests with it; the
modules that run models import those libraries inside their functions.
"""

from app.runtime.families import FAMILIES, FamilyTraits, family_traits
from app.runtime.oom import is_out_of_memory, run_with_oom_split
from app.runtime.samplers import FLOW_SAMPLERS, SAMPLERS, resolve_sampler, sampler_names, samplers_for_family
from app.runtime.sizes import check_size
from app.runtime.types import (
    GenerationCancelled,
    GenerationParams,
    ImagePrompt,
    RuntimeModelError,
    StepCallback,
)

__all__ = [
    "FAMILIES",
    "FLOW_SAMPLERS",
    "SAMPLERS",
    "FamilyTraits",
    "GenerationCancelled",
    "GenerationParams",
    "ImagePrompt",
    "RuntimeModelError",
    "StepCallback",
    "check_size",
    "family_traits",
    "is_out_of_memory",
    "resolve_sampler",
    "run_with_oom_split",
    "sampler_names",
    "samplers_for_family",
]
