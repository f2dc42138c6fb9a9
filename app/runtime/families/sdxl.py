"""Stable Diffusion XL (Pony Diffusion V6 XL and other SDXL fine-tunes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.runtime.families import FAMILIES, FamilyTraits
from app.runtime.families.common import a1111_to_diffusers_clip_skip

if TYPE_CHECKING:
    import torch

    from app.runtime.types import ImagePrompt


class SDXLAdapter:
    traits: FamilyTraits = FAMILIES["sdxl"]
    denoiser_attr = "unet"

    def accepts_class(self, class_name: str) -> bool:
        return class_name.startswith("StableDiffusionXL")

    def load_folder(self, path: Path, dtype: torch.dtype) -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline.from_pretrained(
            path,
            dtype=dtype,
            local_files_only=True,
            use_safetensors=True,
            add_watermarker=False,
        )

    def load_single_file(self, path: Path, dtype: torch.dtype, config_dir: Path | None) -> Any:
        from app.runtime.single_file import load_single_file_pipeline

        return load_single_file_pipeline(path, dtype=dtype, config_dir=config_dir)

    def checkpoint_problem(self, keys: set[str]) -> str | None:
        from app.runtime.single_file import describe_layout_problem

        return describe_layout_problem(keys)

    def pipeline_problem(self, pipe: Any) -> str | None:
        if pipe.text_encoder is None or pipe.tokenizer is None:
            return "it lacks the first text encoder (a refiner?)"
        return None

    def max_clip_skip(self, pipe: Any) -> int | None:
        return min(
            int(pipe.text_encoder.config.num_hidden_layers),
            int(pipe.text_encoder_2.config.num_hidden_layers),
        )

    def max_side(self, pipe: Any) -> int | None:
        return None

    def pipeline_for_call(self, pipe: Any, scheduler: Any) -> Any:
        components = {**pipe.components, "scheduler": scheduler}
        return type(pipe)(
            **components,
            force_zeros_for_empty_prompt=_force_zeros(pipe),
            add_watermarker=False,
        )

    def uses_negatives(self, pipe: Any, guidance_scale: float) -> bool:
        # Guidance-distilled UNets (time_cond_proj_dim set) take the scale as an input instead.
        return guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None

    def encode(
        self, pipe: Any, images: Sequence[ImagePrompt], *, clip_skip: int | None, with_negatives: bool
    ) -> dict[str, torch.Tensor]:
        """Text embeddings for the batch, with CLIP skip applied to negatives too.

        diffusers applies ``clip_skip`` to the prompt only and always takes the
        penultimate layer for the negative prompt; encoding both ourselves keeps
        them consistent. An empty negative prompt becomes all-zero embeddings
        (SDXL's ``force_zeros_for_empty_prompt``, which A1111 also applies),
        decided per image so a batch matches its images run alone.
        """
        import torch

        skip = a1111_to_diffusers_clip_skip(clip_skip)
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=[image.prompt for image in images],
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            clip_skip=skip,
        )
        result = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if not with_negatives:
            return result
        negatives = [image.negative_prompt for image in images]
        zeroed = [_force_zeros(pipe) and not text for text in negatives]
        if all(zeroed):
            negative_embeds = torch.zeros_like(prompt_embeds)
            negative_pooled = torch.zeros_like(pooled)
        else:
            negative_embeds, _, negative_pooled, _ = pipe.encode_prompt(
                prompt=negatives,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                clip_skip=skip,
            )
            if any(zeroed):
                mask = torch.tensor(zeroed, device=negative_embeds.device)
                negative_embeds[mask] = 0
                negative_pooled[mask] = 0
        result["negative_prompt_embeds"] = negative_embeds
        result["negative_pooled_prompt_embeds"] = negative_pooled
        return result


def _force_zeros(pipe: Any) -> bool:
    return bool(pipe.config.get("force_zeros_for_empty_prompt", True))


ADAPTER = SDXLAdapter()
