"""Model families: what differs between SDXL, SD3 and AuraFlow pipelines, behind one interface.

``FamilyTraits`` are plain facts the API process needs to validate requests
(sampler set, size multiple, whether CLIP skip applies); this module and the
traits import neither torch nor diffusers. ``adapter_for`` returns the
``FamilyAdapter`` that loads and drives a family's diffusers pipeline; it
imports the family's module, which imports torch lazily inside its methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch

    from app.runtime.types import ImagePrompt

SamplerSet = Literal["diffusion", "flow"]


@dataclass(frozen=True)
class FamilyTraits:
    """What a family is, independent of any loaded weights."""

    name: str
    # Shown in error messages: "not a Stable Diffusion XL one (family 'sdxl')".
    display_name: str
    # "diffusion": noise-prediction models and the A1111 sampler table; "flow": flow-matching
    # models (rectified flow), whose schedulers are the flow-match ones.
    sampler_set: SamplerSet
    default_sampler: str
    # Width and height must be multiples of this: the VAE's factor of 8, times the
    # transformer's patch size of 2 for the MMDiT families.
    size_multiple: int
    # Whether the text encoders include CLIP, so that A1111's CLIP skip means something.
    uses_clip: bool
    # Whether one original-layout .safetensors checkpoint can be served (else a diffusers folder
    # only). SD3 and AuraFlow checkpoints need the models file's ``config`` folder as well.
    single_file: bool


FAMILIES: Mapping[str, FamilyTraits] = MappingProxyType(
    {
        "sdxl": FamilyTraits(
            name="sdxl",
            display_name="Stable Diffusion XL",
            sampler_set="diffusion",
            default_sampler="Euler a",
            size_multiple=8,
            uses_clip=True,
            single_file=True,
        ),
        "sd3": FamilyTraits(
            name="sd3",
            display_name="Stable Diffusion 3",
            sampler_set="flow",
            default_sampler="Euler",
            size_multiple=16,
            uses_clip=True,
            single_file=True,
        ),
        "auraflow": FamilyTraits(
            name="auraflow",
            display_name="AuraFlow",
            sampler_set="flow",
            default_sampler="Euler",
            size_multiple=16,
            uses_clip=False,
            single_file=True,
        ),
    }
)


def family_traits(family: str) -> FamilyTraits:
    """The traits of ``family``; ``KeyError`` for a family this runtime does not know."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise KeyError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}") from None


class FamilyAdapter(Protocol):
    """How the runtime drives one family's diffusers pipeline.

    Everything family-specific lives behind this: which pipeline class, how a
    folder or checkpoint is loaded, how prompts and negative prompts become
    embeddings (with CLIP skip where the family has CLIP), and what extra
    limits the pipeline puts on a call. Batching, seeding, sampler choice,
    progress, VAE decoding and OOM handling are shared and live in ``pipelines``.
    """

    traits: FamilyTraits
    # The pipeline attribute holding the denoiser ("unet" or "transformer").
    denoiser_attr: str

    def accepts_class(self, class_name: str) -> bool:
        """Whether a folder whose model_index.json names ``class_name`` belongs to this family."""
        ...

    def load_folder(self, path: Path, dtype: torch.dtype) -> Any:
        """The pipeline from a diffusers folder, offline, in ``dtype``."""
        ...

    def load_single_file(self, path: Path, dtype: torch.dtype, config_dir: Path | None) -> Any:
        """The pipeline from one original-layout checkpoint (``RuntimeModelError`` if unsupported)."""
        ...

    def checkpoint_problem(self, keys: set[str]) -> str | None:
        """Why a checkpoint with these tensor names cannot be this family's, or None."""
        ...

    def pipeline_problem(self, pipe: Any) -> str | None:
        """Why a loaded pipeline cannot generate on its own (a missing text encoder), or None."""
        ...

    def max_clip_skip(self, pipe: Any) -> int | None:
        """The largest A1111 CLIP skip the text encoders allow; None when the family has no CLIP."""
        ...

    def max_side(self, pipe: Any) -> int | None:
        """The largest width or height the denoiser's position embedding covers; None if unbounded."""
        ...

    def pipeline_for_call(self, pipe: Any, scheduler: Any) -> Any:
        """A pipeline object sharing ``pipe``'s modules, with its own scheduler and per-call state."""
        ...

    def uses_negatives(self, pipe: Any, guidance_scale: float) -> bool:
        """Whether a call at this guidance runs classifier-free guidance (and so reads negatives)."""
        ...

    def encode(
        self, pipe: Any, images: Sequence[ImagePrompt], *, clip_skip: int | None, with_negatives: bool
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments for the pipeline call carrying every image's prompt (and negative) embeddings."""
        ...


_MODULES: Mapping[str, str] = MappingProxyType(
    {
        "sdxl": "app.runtime.families.sdxl",
        "sd3": "app.runtime.families.sd3",
        "auraflow": "app.runtime.families.auraflow",
    }
)


def adapter_for(family: str) -> FamilyAdapter:
    """The adapter for ``family`` (``KeyError`` if unknown)."""
    family_traits(family)
    module = importlib.import_module(_MODULES[family])
    adapter: FamilyAdapter = module.ADAPTER
    return adapter
