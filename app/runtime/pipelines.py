"""SDXL models loaded once and run as batched pipeline calls."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from app.config import ModelSpec
from app.runtime.progress import disable_library_progress_bars
from app.runtime.samplers import make_scheduler, resolve_sampler
from app.runtime.single_file import checkpoint_keys, describe_layout_problem, load_single_file_pipeline
from app.runtime.types import (
    GenerationCancelled,
    GenerationParams,
    ImagePrompt,
    RuntimeModelError,
    StepCallback,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

# torch.Generator.manual_seed accepts exactly this range.
_SEED_MIN = -(2**63)
_SEED_MAX = 2**64 - 1


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype for a ModelSpec ``dtype`` on ``device``.

    "auto" is bfloat16 on accelerators (fp16 SDXL UNets can overflow, bf16
    has fp32's range) and float32 on CPU, where half precision is slow.
    """
    import torch

    if dtype == "auto":
        return torch.float32 if device.split(":", 1)[0] == "cpu" else torch.bfloat16
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise ValueError(f"unsupported dtype {dtype!r}; expected auto, {', '.join(choices)}")
    return choices[dtype]


def a1111_to_diffusers_clip_skip(clip_skip: int | None) -> int | None:
    """Translate A1111's CLIP skip (1 = last layer, 2 = penultimate) to diffusers' SDXL argument.

    diffusers' SDXL ``encode_prompt`` reads ``hidden_states[-(clip_skip + 2)]``,
    and ``hidden_states[-2]`` (the penultimate layer, which SDXL was trained on)
    when ``clip_skip`` is None. A1111's ``n`` means ``hidden_states[-n]``, so the
    diffusers value is ``n - 2``: 2 -> None (the default), 3 -> 1, and 1 -> -1,
    which selects ``hidden_states[-1]``, the last layer before the final norm.
    None (the caller did not ask) keeps SDXL's penultimate layer.
    """
    if clip_skip is None or clip_skip == 2:
        return None
    return clip_skip - 2


class _StepReporter:
    """Turns diffusers' per-iteration callback into one ``on_step`` call per requested step.

    Second-order samplers (Heun, DPM2) and PLMS run more loop iterations than
    requested steps, so iteration ``i`` of ``n`` maps to step ``ceil((i+1) * steps / n)``
    and every step from 1 to ``steps`` is reported exactly once, in order.
    """

    def __init__(self, steps: int, on_step: StepCallback | None) -> None:
        self.steps = steps
        self.on_step = on_step
        self.reported = 0

    def __call__(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        iterations = max(int(pipe.num_timesteps), 1)
        done = min(self.steps, -(-(index + 1) * self.steps // iterations))
        while self.reported < done:
            self.reported += 1
            if self.on_step is not None and self.on_step(self.reported, self.steps) is False:
                # Raising here, rather than setting diffusers' ``interrupt`` flag,
                # stops at once: with the flag the pipeline still walks the
                # remaining iterations and VAE-decodes latents nobody will see.
                raise GenerationCancelled(f"cancelled after step {self.reported} of {self.steps}")
        return {}


class LoadedModel:
    """One SDXL pipeline resident on one device.

    ``generate`` may be called from any thread, but calls for one model must not
    overlap: they share the weights and the device. The worker runs them one at
    a time per model.
    """

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype, pipeline: Any) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self._pipeline = pipeline
        # A private deep copy: each call builds its scheduler from it, so no
        # call can leave sampler state behind for the next one.
        self._scheduler_config: Mapping[str, Any] = MappingProxyType(copy.deepcopy(dict(pipeline.scheduler.config)))
        self._force_zeros_for_empty_prompt = bool(pipeline.config.get("force_zeros_for_empty_prompt", True))
        self.max_clip_skip = min(
            int(pipeline.text_encoder.config.num_hidden_layers),
            int(pipeline.text_encoder_2.config.num_hidden_layers),
        )

    @property
    def pipeline(self) -> Any:
        """The underlying diffusers pipeline, for benchmarks and diagnostics."""
        return self._pipeline

    @property
    def scheduler_config(self) -> Mapping[str, Any]:
        return self._scheduler_config

    def check(self, params: GenerationParams, images: Sequence[ImagePrompt]) -> None:
        """Raise ``ValueError`` for a call this model cannot run, before any device work."""
        if not images:
            raise ValueError("at least one image is required")
        if params.width <= 0 or params.height <= 0 or params.width % 8 or params.height % 8:
            raise ValueError(f"size {params.width}x{params.height} must be positive multiples of 8")
        if params.steps < 1:
            raise ValueError(f"steps must be at least 1, got {params.steps}")
        if not math.isfinite(params.guidance_scale) or params.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {params.guidance_scale}")
        try:
            resolve_sampler(params.sampler)
        except KeyError:
            raise ValueError(f"unknown sampler {params.sampler!r}") from None
        if params.clip_skip is not None and not 1 <= params.clip_skip <= self.max_clip_skip:
            raise ValueError(f"clip_skip must be between 1 and {self.max_clip_skip}, got {params.clip_skip}")
        for image in images:
            if not _SEED_MIN <= image.seed <= _SEED_MAX:
                raise ValueError(f"seed {image.seed} is out of range")

    def generate(
        self,
        params: GenerationParams,
        images: Sequence[ImagePrompt],
        on_step: StepCallback | None = None,
    ) -> list[Image.Image]:
        """Render every image of ``images`` in one pipeline call, in order.

        Each image has its own generator seeded with its seed, so an image comes
        out the same whether it runs alone or in a batch (up to float rounding
        in batched kernels). ``on_step(done, total)`` runs after each of the
        ``params.steps`` steps; returning False raises ``GenerationCancelled``.
        """
        import torch

        self.check(params, images)
        pipe = self._pipeline_for_call(make_scheduler(params.sampler, self._scheduler_config))
        generators = [torch.Generator(device=self.device).manual_seed(image.seed) for image in images]
        with torch.inference_mode():
            embeddings = self._encode_prompts(pipe, params, images)
            output = pipe(
                **embeddings,
                width=params.width,
                height=params.height,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=generators,
                num_images_per_prompt=1,
                output_type="pil",
                callback_on_step_end=_StepReporter(params.steps, on_step),
            )
        return list(output.images)

    def _pipeline_for_call(self, scheduler: Any) -> Any:
        # A pipeline object per call shares the modules but not the per-call
        # state diffusers keeps on it (scheduler, guidance, interrupt flag).
        components = {**self._pipeline.components, "scheduler": scheduler}
        pipe = type(self._pipeline)(
            **components,
            force_zeros_for_empty_prompt=self._force_zeros_for_empty_prompt,
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _encode_prompts(
        self, pipe: Any, params: GenerationParams, images: Sequence[ImagePrompt]
    ) -> dict[str, torch.Tensor]:
        """Text embeddings for the batch, with CLIP skip applied to negatives too.

        diffusers applies ``clip_skip`` to the prompt only and always takes the
        penultimate layer for the negative prompt; encoding both ourselves keeps
        them consistent. An empty negative prompt becomes all-zero embeddings
        (SDXL's ``force_zeros_for_empty_prompt``, which A1111 also applies),
        decided per image so a batch matches its images run alone.
        """
        import torch

        clip_skip = a1111_to_diffusers_clip_skip(params.clip_skip)
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=[image.prompt for image in images],
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            clip_skip=clip_skip,
        )
        result = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        uses_negatives = params.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
        if not uses_negatives:
            return result
        negatives = [image.negative_prompt for image in images]
        zeroed = [self._force_zeros_for_empty_prompt and not text for text in negatives]
        if all(zeroed):
            negative_embeds = torch.zeros_like(prompt_embeds)
            negative_pooled = torch.zeros_like(pooled)
        else:
            negative_embeds, _, negative_pooled, _ = pipe.encode_prompt(
                prompt=negatives,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                clip_skip=clip_skip,
            )
            if any(zeroed):
                mask = torch.tensor(zeroed, device=negative_embeds.device)
                negative_embeds[mask] = 0
                negative_pooled[mask] = 0
        result["negative_prompt_embeds"] = negative_embeds
        result["negative_pooled_prompt_embeds"] = negative_pooled
        return result


def _load_folder(spec: ModelSpec, path: Path, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionXLPipeline

    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise RuntimeModelError(
            f"model {spec.name!r}: {path} is a directory without model_index.json; "
            "expected a diffusers pipeline folder or a .safetensors checkpoint"
        )
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeModelError(f"model {spec.name!r}: unreadable {index_path}: {exc}") from exc
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if not (isinstance(class_name, str) and class_name.startswith("StableDiffusionXL")):
        raise RuntimeModelError(
            f"model {spec.name!r}: {path} holds a {class_name or 'unknown'} pipeline, "
            "not a Stable Diffusion XL one (family 'sdxl')"
        )
    return StableDiffusionXLPipeline.from_pretrained(
        path,
        dtype=dtype,
        local_files_only=True,
        use_safetensors=True,
        add_watermarker=False,
    )


def _load_checkpoint(spec: ModelSpec, path: Path, dtype: torch.dtype, config_dir: Path | None) -> Any:
    if path.suffix.lower() != ".safetensors":
        # .ckpt/.pt files are pickles that can run code when loaded.
        raise RuntimeModelError(
            f"model {spec.name!r}: {path.name} is not a .safetensors file; "
            "pickle checkpoints (.ckpt, .pt, .bin) are not loaded"
        )
    try:
        keys = checkpoint_keys(path)
    except Exception as exc:
        raise RuntimeModelError(f"model {spec.name!r}: {path} is not a readable safetensors file: {exc}") from exc
    problem = describe_layout_problem(keys)
    if problem is not None:
        raise RuntimeModelError(f"model {spec.name!r}: {path} is not an SDXL checkpoint: {problem}")
    return load_single_file_pipeline(path, dtype=dtype, config_dir=config_dir)


def load_model(spec: ModelSpec, device: str, *, config_dir: Path | None = None) -> LoadedModel:
    """Load ``spec`` onto ``device``, offline.

    ``spec.path`` is either a diffusers folder or one ``.safetensors`` checkpoint
    in the original SDXL layout. For a checkpoint, ``config_dir`` may name a
    diffusers folder whose configs describe its architecture; the default is
    SDXL base 1.0's, right for Pony Diffusion V6 XL and other SDXL fine-tunes.
    Raises ``RuntimeModelError`` when the model is missing or cannot be loaded.
    """
    config_dir = config_dir if config_dir is not None else spec.config
    if spec.family != "sdxl":
        raise RuntimeModelError(f"model {spec.name!r}: family {spec.family!r} is not supported by this runtime")
    path = Path(spec.path)
    if not path.exists():
        raise RuntimeModelError(f"model {spec.name!r}: {path} does not exist")
    if config_dir is not None and not (config_dir / "model_index.json").is_file():
        raise RuntimeModelError(f"model {spec.name!r}: config folder {config_dir} has no model_index.json")
    started = time.monotonic()
    try:
        dtype = resolve_dtype(spec.dtype, device)
        disable_library_progress_bars()
        pipeline = _load_folder(spec, path, dtype) if path.is_dir() else _load_checkpoint(spec, path, dtype, config_dir)
        if pipeline.text_encoder is None or pipeline.tokenizer is None:
            raise RuntimeModelError(f"model {spec.name!r}: {path} lacks the first text encoder (a refiner?)")
        pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
    except RuntimeModelError:
        raise
    except Exception as exc:
        # Whatever diffusers, transformers, safetensors or the device raise here,
        # the outcome for the caller is the same: this model cannot be served.
        raise RuntimeModelError(f"model {spec.name!r}: cannot load {path}: {type(exc).__name__}: {exc}") from exc
    logger.info(
        "model loaded",
        extra={
            "model": spec.name,
            "path": str(path),
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return LoadedModel(spec, device, dtype, pipeline)
