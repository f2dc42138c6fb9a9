"""Stable Diffusion 3 / 3.5 (MMDiT): two CLIP encoders with projection plus T5-XXL, flow matching."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.runtime.families import FAMILIES, FamilyTraits
from app.runtime.families.common import a1111_to_diffusers_clip_skip, transformer_max_side

if TYPE_CHECKING:
    import torch

    from app.runtime.types import ImagePrompt

# T5 tokens per prompt; the pipeline's own default (it accepts up to 512, at a higher cost per step).
MAX_SEQUENCE_LENGTH = 256


class SD3Adapter:
    traits: FamilyTraits = FAMILIES["sd3"]
    denoiser_attr = "transformer"

    def accepts_class(self, class_name: str) -> bool:
        return class_name.startswith("StableDiffusion3")

    def load_folder(self, path: Path, dtype: torch.dtype) -> Any:
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline.from_pretrained(path, dtype=dtype, local_files_only=True, use_safetensors=True)

    def load_single_file(self, path: Path, dtype: torch.dtype, config_dir: Path | None) -> Any:
        from app.runtime.single_file_mmdit import load_sd3_single_file

        return load_sd3_single_file(path, dtype=dtype, config_dir=config_dir)

    def checkpoint_problem(self, keys: set[str]) -> str | None:
        from app.runtime.single_file_mmdit import sd3_layout_problem

        return sd3_layout_problem(keys)

    def pipeline_problem(self, pipe: Any) -> str | None:
        # T5 (text_encoder_3) may be left out to save memory; the CLIP encoders may not.
        if pipe.text_encoder is None or pipe.text_encoder_2 is None:
            return "it lacks a CLIP text encoder"
        return None

    def max_clip_skip(self, pipe: Any) -> int | None:
        return min(
            int(pipe.text_encoder.config.num_hidden_layers),
            int(pipe.text_encoder_2.config.num_hidden_layers),
        )

    def max_side(self, pipe: Any) -> int | None:
        grid = pipe.transformer.config.pos_embed_max_size
        return None if grid is None else transformer_max_side(pipe, int(grid))

    def pipeline_for_call(self, pipe: Any, scheduler: Any) -> Any:
        return type(pipe)(**{**pipe.components, "scheduler": scheduler})

    def uses_negatives(self, pipe: Any, guidance_scale: float) -> bool:
        return guidance_scale > 1

    def encode(
        self, pipe: Any, images: Sequence[ImagePrompt], *, clip_skip: int | None, with_negatives: bool
    ) -> dict[str, torch.Tensor]:
        """CLIP + T5 embeddings for prompts and negatives, CLIP skip applied to both.

        Unlike SDXL, SD3 was trained with empty negatives encoded as text, so an
        empty negative prompt is encoded, not zeroed (as the SD3 pipeline does).
        """
        skip = a1111_to_diffusers_clip_skip(clip_skip)

        def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=texts,
                prompt_2=None,
                prompt_3=None,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                clip_skip=skip,
                max_sequence_length=MAX_SEQUENCE_LENGTH,
            )
            return embeds, pooled

        prompt_embeds, pooled = encode([image.prompt for image in images])
        result = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if with_negatives:
            negative_embeds, negative_pooled = encode([image.negative_prompt for image in images])
            result["negative_prompt_embeds"] = negative_embeds
            result["negative_pooled_prompt_embeds"] = negative_pooled
        return result


ADAPTER = SD3Adapter()
