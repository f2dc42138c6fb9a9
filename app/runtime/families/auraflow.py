"""AuraFlow (MMDiT + single-stream DiT) with a UMT5 text encoder, flow matching; Pony V7's base."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.runtime.families import FAMILIES, FamilyTraits
from app.runtime.families.common import transformer_max_side

if TYPE_CHECKING:
    import torch

    from app.runtime.types import ImagePrompt

# Text tokens per prompt, the pipeline's default.
MAX_SEQUENCE_LENGTH = 256


class AuraFlowAdapter:
    traits: FamilyTraits = FAMILIES["auraflow"]
    denoiser_attr = "transformer"

    def accepts_class(self, class_name: str) -> bool:
        return class_name == "AuraFlowPipeline"

    def load_folder(self, path: Path, dtype: torch.dtype) -> Any:
        from diffusers import AuraFlowPipeline

        return AuraFlowPipeline.from_pretrained(path, dtype=dtype, local_files_only=True, use_safetensors=True)

    def load_single_file(self, path: Path, dtype: torch.dtype, config_dir: Path | None) -> Any:
        from app.runtime.single_file_mmdit import load_auraflow_single_file

        return load_auraflow_single_file(path, dtype=dtype, config_dir=config_dir)

    def checkpoint_problem(self, keys: set[str]) -> str | None:
        from app.runtime.single_file_mmdit import auraflow_layout_problem

        return auraflow_layout_problem(keys)

    def pipeline_problem(self, pipe: Any) -> str | None:
        if pipe.text_encoder is None or pipe.tokenizer is None:
            return "it lacks its text encoder"
        return None

    def max_clip_skip(self, pipe: Any) -> int | None:
        # A T5-family encoder only: CLIP skip has nothing to act on, and A1111 clients
        # send it as a global setting, so it is ignored rather than refused.
        return None

    def max_side(self, pipe: Any) -> int | None:
        # AuraFlow's pos_embed_max_size counts patches of a square grid, not its side.
        return transformer_max_side(pipe, math.isqrt(int(pipe.transformer.config.pos_embed_max_size)))

    def pipeline_for_call(self, pipe: Any, scheduler: Any) -> Any:
        return type(pipe)(**{**pipe.components, "scheduler": scheduler})

    def uses_negatives(self, pipe: Any, guidance_scale: float) -> bool:
        return guidance_scale > 1

    def encode(
        self, pipe: Any, images: Sequence[ImagePrompt], *, clip_skip: int | None, with_negatives: bool
    ) -> dict[str, torch.Tensor]:
        """Text-encoder embeddings (padding positions zeroed by the pipeline) and their masks."""

        def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, mask, _, _ = pipe.encode_prompt(
                prompt=texts,
                negative_prompt=None,
                do_classifier_free_guidance=False,
                num_images_per_prompt=1,
                max_sequence_length=MAX_SEQUENCE_LENGTH,
            )
            return embeds, mask

        prompt_embeds, mask = encode([image.prompt for image in images])
        result = {"prompt_embeds": prompt_embeds, "prompt_attention_mask": mask}
        if with_negatives:
            negative_embeds, negative_mask = encode([image.negative_prompt for image in images])
            result["negative_prompt_embeds"] = negative_embeds
            result["negative_prompt_attention_mask"] = negative_mask
        return result


ADAPTER = AuraFlowAdapter()
