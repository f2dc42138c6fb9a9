"""Models loaded once per device and run as batched pipeline calls, for every supported family.

What differs between SDXL, SD3 and AuraFlow (pipeline class, text encoders,
loading) sits behind ``app.runtime.families``; seeding, batching, samplers,
progress, VAE decoding, OOM splitting and compilation are shared here.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import inspect
import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from app.config import ModelSpec
from app.runtime.acceleration import (
    bucket_for,
    compile_denoiser,
    is_cuda,
    optimize_for_device,
    pad_to_bucket,
)
from app.runtime.families import FamilyAdapter, adapter_for
from app.runtime.families.common import a1111_to_diffusers_clip_skip, pipeline_class_name
from app.runtime.memory import module_bytes
from app.runtime.oom import OomPredicate, is_out_of_memory, run_with_oom_split
from app.runtime.preview import LatentProjection, latents_to_previews, projection_for
from app.runtime.progress import disable_library_progress_bars
from app.runtime.samplers import make_scheduler, resolve_sampler
from app.runtime.single_file import checkpoint_keys
from app.runtime.types import (
    GenerationCancelled,
    GenerationParams,
    HiresPass,
    ImagePrompt,
    LoraUse,
    PreviewHook,
    RuntimeModelError,
    StepCallback,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "LoadedModel",
    "a1111_to_diffusers_clip_skip",
    "load_model",
    "prepare_model",
    "resolve_dtype",
    "resolve_dtype_name",
    "resolve_vae_dtype",
]

logger = logging.getLogger(__name__)

# torch.Generator.manual_seed accepts exactly this range.
_DENOISERS = frozenset({"unet", "transformer"})
# A1111's latent upscalers: (torch interpolation mode, antialias).
_LATENT_UPSCALERS: Mapping[str, tuple[str, bool]] = MappingProxyType({
    "Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False), "Latent (nearest-exact)": ("nearest-exact", False),
})
_SEED_MIN = -(2**63)
_SEED_MAX = 2**64 - 1
_DTYPE_NAMES = ("float32", "bfloat16", "float16")
# Steps per warm-up call: shapes, not step counts, decide what gets compiled.
_WARM_UP_STEPS = 2


def resolve_dtype_name(dtype: str, device: str) -> str:
    """The concrete dtype name for a ModelSpec ``dtype`` on ``device`` (no torch import).

    "auto" is bfloat16 on accelerators (fp16 SDXL UNets can overflow, bf16
    has fp32's range) and float32 on CPU, where half precision is slow.
    """
    if dtype == "auto":
        return "float32" if device.split(":", 1)[0] == "cpu" else "bfloat16"
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected auto, {', '.join(_DTYPE_NAMES)}")
    return dtype


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype for a ModelSpec ``dtype`` on ``device`` (see ``resolve_dtype_name``)."""
    import torch

    dtype_type: torch.dtype = getattr(torch, resolve_dtype_name(dtype, device))
    return dtype_type


def resolve_vae_dtype(vae_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The VAE's dtype: the model's own for "auto", else the one configured."""
    import torch

    if vae_dtype == "auto":
        return model_dtype
    if vae_dtype not in _DTYPE_NAMES:
        raise ValueError(f"unsupported vae_dtype {vae_dtype!r}; expected auto, {', '.join(_DTYPE_NAMES)}")
    chosen: torch.dtype = getattr(torch, vae_dtype)
    return chosen


class _StepReporter:
    """Turns diffusers' per-iteration callback into one ``on_step`` call per requested step.

    Second-order samplers (Heun, DPM2) and PLMS run more loop iterations than
    requested steps, so iteration ``i`` of ``n`` maps to step ``ceil((i+1) * steps / n)``
    and every step from 1 to ``steps`` is reported exactly once, in order.

    With a ``PreviewHook``, each reported step first asks it which images want a
    preview and hands it those images' current latents projected to RGB. Only
    the first ``count`` images are real: rows past them pad the call to a
    compiled batch bucket and are never previewed.
    """

    def __init__(
        self,
        steps: int,
        on_step: StepCallback | None,
        on_preview: PreviewHook | None = None,
        *,
        count: int = 0,
        projection: LatentProjection | None = None,
    ) -> None:
        self.steps = steps
        self.on_step = on_step
        self.reported = 0
        # Without factors for this VAE there is nothing to preview, so the hook is never asked.
        self.on_preview = on_preview if projection is not None and count > 0 else None
        self.count = count
        self.projection = projection

    def __call__(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        iterations = max(int(pipe.num_timesteps), 1)
        done = min(self.steps, -(-(index + 1) * self.steps // iterations))
        while self.reported < done:
            self.reported += 1
            if self.on_preview is not None:
                self._preview(self.reported, tensors)
            if self.on_step is not None and self.on_step(self.reported, self.steps) is False:
                # Raising here, rather than setting diffusers' ``interrupt`` flag,
                # stops at once: with the flag the pipeline still walks the
                # remaining iterations and VAE-decodes latents nobody will see.
                raise GenerationCancelled(f"cancelled after step {self.reported} of {self.steps}")
        return {}

    def _preview(self, step: int, tensors: dict[str, Any]) -> None:
        hook, projection = self.on_preview, self.projection
        assert hook is not None and projection is not None
        try:
            wanted = sorted({i for i in hook.wanted(step, self.steps) if 0 <= i < self.count})
            latents = tensors.get("latents")
            if wanted and latents is not None:
                hook.deliver(step, dict(zip(wanted, latents_to_previews(latents[wanted], projection), strict=True)))
        except Exception:
            # A preview is a nicety: failing to make or hand one over must not cost the
            # images, so previews stop for the rest of this call and the call carries on.
            logger.exception("preview failed at step %d; no more previews for this call", step)
            self.on_preview = None


class LoadedModel:
    """One pipeline resident on one device.

    ``generate`` may be called from any thread, but calls for one model must not
    overlap: they share the weights and the device. The worker runs them one at
    a time per model.
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: str,
        dtype: torch.dtype,
        pipeline: Any,
        *,
        adapter: FamilyAdapter | None = None,
        batch_buckets: Sequence[int] | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.adapter = adapter if adapter is not None else adapter_for(spec.family)
        self._pipeline = pipeline
        # A private deep copy: each call builds its scheduler from it, so no
        # call can leave sampler state behind for the next one.
        self._scheduler_config: Mapping[str, Any] = MappingProxyType(copy.deepcopy(dict(pipeline.scheduler.config)))
        self.max_clip_skip: int | None = self.adapter.max_clip_skip(pipeline)
        self.max_side: int | None = self.adapter.max_side(pipeline)
        self.memory_bytes: int = module_bytes(pipeline)
        # With a compiled denoiser, every call is padded to one of these batch sizes.
        self.batch_buckets: tuple[int, ...] | None = tuple(sorted(set(batch_buckets))) if batch_buckets else None
        # LoRAs loaded into this pipeline as adapters (name → adapter name, file): loaded on first use
        # and kept, so switching sets is a set_adapters call, never a reload of the base model.
        self._adapters: dict[str, tuple[str, str]] = {}

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def pipeline(self) -> Any:
        """The underlying diffusers pipeline, for benchmarks and diagnostics."""
        return self._pipeline

    @property
    def scheduler_config(self) -> Mapping[str, Any]:
        return self._scheduler_config

    def effective_clip_skip(self, params: GenerationParams) -> int | None:
        """The request's CLIP skip, else the model's configured one; None for families without CLIP."""
        if self.max_clip_skip is None:
            return None
        return params.clip_skip if params.clip_skip is not None else self.spec.clip_skip

    def check(self, params: GenerationParams, images: Sequence[ImagePrompt]) -> None:
        """Raise ``ValueError`` for a call this model cannot run, before any device work."""
        if not images:
            raise ValueError("at least one image is required")
        multiple = self.adapter.traits.size_multiple
        if params.width <= 0 or params.height <= 0 or params.width % multiple or params.height % multiple:
            raise ValueError(f"size {params.width}x{params.height} must be positive multiples of {multiple}")
        if self.max_side is not None and max(params.width, params.height) > self.max_side:
            raise ValueError(
                f"size {params.width}x{params.height} exceeds this model's largest side of {self.max_side}"
            )
        if params.steps < 1:
            raise ValueError(f"steps must be at least 1, got {params.steps}")
        if not math.isfinite(params.guidance_scale) or params.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {params.guidance_scale}")
        try:
            resolve_sampler(params.sampler, family=self.family)
        except KeyError:
            raise ValueError(f"unknown sampler {params.sampler!r} for family {self.family!r}") from None
        clip_skip = self.effective_clip_skip(params)
        if clip_skip is not None and self.max_clip_skip is not None and not 1 <= clip_skip <= self.max_clip_skip:
            raise ValueError(f"clip_skip must be between 1 and {self.max_clip_skip}, got {clip_skip}")
        for image in images:
            if not _SEED_MIN <= image.seed <= _SEED_MAX:
                raise ValueError(f"seed {image.seed} is out of range")

    def generate(
        self,
        params: GenerationParams,
        images: Sequence[ImagePrompt],
        on_step: StepCallback | None = None,
        *,
        on_preview: PreviewHook | None = None,
    ) -> list[Image.Image]:
        """Render every image of ``images`` in one pipeline call, in order.

        Each image has its own generator seeded with its seed, so an image comes
        out the same whether it runs alone or in a batch (up to float rounding
        in batched kernels). ``on_step(done, total)`` runs after each of the
        ``params.steps`` steps; returning False raises ``GenerationCancelled``.
        ``on_preview`` gets latent previews of the images it asks for, at the
        steps it asks for (indices into ``images``); none for a VAE whose latent
        channels have no known RGB factors. With a compiled denoiser the call is
        padded to its batch bucket with copies of the last image, whose outputs
        are dropped.
        """
        import torch

        self.check(params, images)
        self.use_loras(params.loras)
        count = len(images)
        batch = pad_to_bucket(images, self.batch_buckets) if self.batch_buckets else list(images)
        scheduler = make_scheduler(params.sampler, self._scheduler_config, family=self.family)
        pipe = self.adapter.pipeline_for_call(self._pipeline, scheduler)
        inputs = _image_inputs(batch, params)
        if inputs:
            pipe = _image_pipeline(pipe, inpaint="mask_image" in inputs, model=self.spec.name)
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator(device=self.device).manual_seed(image.seed) for image in batch]
        reporter = _StepReporter(
            params.steps,
            on_step,
            on_preview,
            count=count,
            projection=projection_for(int(pipe.vae.config.latent_channels)) if on_preview is not None else None,
        )
        with torch.inference_mode():
            embeddings = self.adapter.encode(
                pipe,
                batch,
                clip_skip=self.effective_clip_skip(params),
                with_negatives=self.adapter.uses_negatives(pipe, params.guidance_scale),
            )
            # SDXL's img2img pipeline takes its size from the init images and refuses width/height; SD3's takes
            # them (and would otherwise resize the init images to its default size).
            size = ({"width": params.width, "height": params.height}
                    if "width" in inspect.signature(pipe.__call__).parameters else {})
            output = pipe(
                **embeddings,
                **inputs,
                **size,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=generators,
                num_images_per_prompt=1,
                output_type="latent",
                callback_on_step_end=reporter,
                # Already the default of every supported pipeline; named because previews read it.
                callback_on_step_end_tensor_inputs=["latents"],
            )
            latents = output.images
            if params.hires is not None:
                latents = self._hires_pass(pipe, params, params.hires, latents, embeddings, batch, on_step)
            decoded = self._decode(pipe, latents[:count])
        if "mask_image" in inputs:
            from PIL import Image

            # What A1111 does too: outside the mask the init image comes back as it was, not as the
            # VAE's round trip of it.
            decoded = [Image.composite(out, prompt.init_image, prompt.mask.convert("L"))
                       for out, prompt in zip(decoded, images, strict=True)
                       if prompt.init_image is not None and prompt.mask is not None]
        return decoded

    def _hires_pass(self, pipe: Any, params: GenerationParams, hires: HiresPass, latents: torch.Tensor,
                    embeddings: Mapping[str, Any], batch: Sequence[ImagePrompt],
                    on_step: StepCallback | None) -> torch.Tensor:
        """Hires. fix's second pass: latents enlarged (A1111's latent upscalers), then img2img at ``denoise``
        on the same components, prompt embeddings and seeds. Only cancellation is reported from it."""
        import torch

        mode, antialias = _LATENT_UPSCALERS[hires.upscaler]
        factor = int(getattr(pipe, "vae_scale_factor", 8))
        size = (hires.height // factor, hires.width // factor)
        enlarged = torch.nn.functional.interpolate(latents.float(), size=size, mode=mode, antialias=antialias,
                                                   **({"align_corners": False} if mode in ("bilinear", "bicubic")
                                                      else {})).to(latents.dtype)
        refine = _image_pipeline(pipe, inpaint=False, model=self.spec.name)

        def still_wanted(_pipe: Any, _index: int, _timestep: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None and on_step(params.steps, params.steps) is False:
                raise GenerationCancelled("cancelled during the hires pass")
            return {}

        generators = [torch.Generator(device=self.device).manual_seed(image.seed) for image in batch]
        output = refine(**embeddings, image=enlarged, strength=hires.denoise, num_inference_steps=hires.steps,
                        guidance_scale=params.guidance_scale, generator=generators, num_images_per_prompt=1,
                        output_type="latent", callback_on_step_end=still_wanted)
        result: torch.Tensor = output.images
        return result

    @property
    def loaded_loras(self) -> list[str]:
        return sorted(self._adapters)

    def use_loras(self, loras: Sequence[LoraUse]) -> None:
        """Makes exactly ``loras`` active, at their weights, loading any not loaded yet.

        Adapters stay loaded (a few MB each) once used. A file that cannot be loaded raises
        ``RuntimeModelError`` naming the LoRA, and leaves the pipeline as it was.
        """
        pipe = self._pipeline
        if not loras:
            if self._adapters:
                pipe.disable_lora()
            return
        if not hasattr(pipe, "load_lora_weights"):
            raise RuntimeModelError(f"model {self.spec.name!r}: family {self.family!r} takes no LoRAs here")
        for lora in loras:
            known = self._adapters.get(lora.name)
            if known is not None and known[1] == lora.path:
                continue
            if known is not None:  # the operator pointed the name at another file: replace it
                pipe.delete_adapters([known[0]])
                del self._adapters[lora.name]
            # peft keeps adapters in ModuleDicts, whose keys may not contain dots: a name of our own.
            adapter = f"lora{len(self._adapters)}_{hashlib.sha1(lora.name.encode()).hexdigest()[:8]}"
            try:
                pipe.load_lora_weights(lora.path, adapter_name=adapter)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    pipe.delete_adapters([adapter])
                raise RuntimeModelError(f"LoRA {lora.name!r} could not be loaded into model {self.spec.name!r}: "
                                        f"{exc}") from exc
            self._adapters[lora.name] = (adapter, lora.path)
        placed = pipe.get_list_adapters()  # component → adapters it carries
        names, weights = [], []
        for lora in loras:
            adapter = self._adapters[lora.name][0]
            names.append(adapter)
            weights.append({component: lora.weight if component in _DENOISERS else lora.text_encoder_weight
                            for component, adapters in placed.items() if adapter in adapters})
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=weights)

    def generate_split(
        self,
        params: GenerationParams,
        images: Sequence[ImagePrompt],
        on_step: StepCallback | None = None,
        *,
        on_preview: PreviewHook | None = None,
        is_oom: OomPredicate = is_out_of_memory,
    ) -> list[Image.Image | Exception]:
        """``generate``, but a call that runs out of device memory is retried in halves.

        Returns one entry per image, in order: the image, or the out-of-memory
        error for an image that did not fit even alone. ``on_step`` restarts
        from step 1 for each retried part, and so do previews; ``on_preview``
        always sees indices into ``images``, whichever part is running. Invalid
        calls raise ``ValueError`` and cancellation raises ``GenerationCancelled``,
        as with ``generate``.
        """
        self.check(params, images)

        def run(part: Sequence[tuple[int, ImagePrompt]]) -> list[Image.Image]:
            prompts = [image for _, image in part]
            if on_preview is None:
                return self.generate(params, prompts, on_step)
            return self.generate(params, prompts, on_step, on_preview=_part_hook(on_preview, [i for i, _ in part]))

        return run_with_oom_split(
            run,
            list(enumerate(images)),
            is_oom=is_oom,
            on_oom=self._release_cached_memory,
        )

    def warm_up(
        self,
        sizes: Sequence[tuple[int, int]] | None = None,
        batch_sizes: Sequence[int] | None = None,
    ) -> int:
        """Run a short call for every size x batch size, so compilation happens now; returns the count.

        Defaults: the model's allowed sizes (else its default size) and its
        batch buckets (else batch 1), at its default sampler and guidance.
        """
        defaults = self.spec.defaults
        sizes = list(sizes) if sizes is not None else self.warm_up_sizes()
        batch_sizes = list(batch_sizes) if batch_sizes is not None else list(self.batch_buckets or (1,))
        calls = 0
        for width, height in sizes:
            params = GenerationParams(
                width=width,
                height=height,
                steps=_WARM_UP_STEPS,
                guidance_scale=defaults.guidance_scale,
                sampler=defaults.sampler,
            )
            for size in batch_sizes:
                self.generate(params, [ImagePrompt("warm-up", "", index) for index in range(size)])
                calls += 1
        return calls

    def warm_up_sizes(self) -> list[tuple[int, int]]:
        from app.runtime.sizes import parse_size

        if self.spec.allowed_sizes:
            return [parse_size(text) for text in self.spec.allowed_sizes]
        return [(self.spec.defaults.width, self.spec.defaults.height)]

    def bucket_for(self, n: int) -> int:
        """How many images a call of ``n`` actually runs (``n`` unless padded to a bucket)."""
        return bucket_for(n, self.batch_buckets) if self.batch_buckets else n

    def _release_cached_memory(self, _error: Exception) -> None:
        gc.collect()
        if is_cuda(self.device):
            import torch

            torch.cuda.empty_cache()

    def _decode(self, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
        """Latents to images through the VAE, one image at a time, in the VAE's own dtype.

        Decoding here rather than in the pipeline keeps the VAE in the dtype the
        model's settings chose (no silent fp32 round trip per call, which the
        SDXL pipeline does under fp16 with ``force_upcast``), and decoding per
        image bounds the VAE's peak memory, the largest of a 1024² batch.
        """
        import torch

        vae = pipe.vae
        config = vae.config
        latents = latents.to(dtype=vae.dtype)
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            channels = latents.shape[1]
            mean_t = torch.tensor(mean).view(1, channels, 1, 1).to(latents)
            std_t = torch.tensor(std).view(1, channels, 1, 1).to(latents)
            latents = latents * std_t / config.scaling_factor + mean_t
        else:
            latents = latents / config.scaling_factor
            shift = getattr(config, "shift_factor", None)
            if shift is not None:
                latents = latents + shift
        decoded = torch.cat([vae.decode(latents[i : i + 1], return_dict=False)[0] for i in range(latents.shape[0])])
        images: list[Image.Image] = pipe.image_processor.postprocess(decoded, output_type="pil")
        return images

    # Kept for callers written before the family adapters existed.
    def _encode_prompts(
        self, pipe: Any, params: GenerationParams, images: Sequence[ImagePrompt]
    ) -> dict[str, torch.Tensor]:
        return self.adapter.encode(
            pipe,
            images,
            clip_skip=self.effective_clip_skip(params),
            with_negatives=self.adapter.uses_negatives(pipe, params.guidance_scale),
        )


def _image_inputs(images: Sequence[ImagePrompt], params: GenerationParams) -> dict[str, Any]:
    """The pipeline arguments of an img2img or inpainting call; empty for text-to-image."""
    if images[0].init_image is None:
        return {}
    if any(image.init_image is None or (image.mask is None) != (images[0].mask is None) for image in images):
        raise ValueError("a call's images must all be img2img, or all inpainting, or none")
    for image in images:
        assert image.init_image is not None
        if image.init_image.size != (params.width, params.height):
            raise ValueError(f"init image is {image.init_image.size}, the call is {params.width}x{params.height}")
        if image.mask is not None and image.mask.size != image.init_image.size:
            raise ValueError("mask and init image differ in size")
    inputs: dict[str, Any] = {"image": [image.init_image for image in images],
                              "strength": params.strength if params.strength is not None else 0.75}
    if images[0].mask is not None:
        inputs["mask_image"] = [image.mask for image in images]
    return inputs


def _image_pipeline(pipe: Any, *, inpaint: bool, model: str) -> Any:
    """The img2img or inpainting pipeline of the same family over the very same components (``from_pipe``:
    no second copy of the weights, LoRA adapters included)."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForInpainting if inpaint else AutoPipelineForImage2Image
    try:
        made = auto.from_pipe(pipe)
    except ValueError as exc:
        raise RuntimeModelError(f"model {model!r}: diffusers has no {'inpainting' if inpaint else 'img2img'} "
                                f"pipeline for {type(pipe).__name__}") from exc
    made.set_progress_bar_config(disable=True)
    return made


def _part_hook(hook: PreviewHook, positions: Sequence[int]) -> PreviewHook:
    """``hook`` as seen by a call running only the images at ``positions`` of the original call."""
    local = {original: k for k, original in enumerate(positions)}

    def wanted(step: int, total: int) -> list[int]:
        return [local[i] for i in hook.wanted(step, total) if i in local]

    def deliver(step: int, previews: Mapping[int, Image.Image]) -> None:
        hook.deliver(step, {positions[k]: image for k, image in previews.items()})

    return PreviewHook(wanted=wanted, deliver=deliver)


def _load_folder(spec: ModelSpec, adapter: FamilyAdapter, path: Path, dtype: torch.dtype) -> Any:
    try:
        class_name = pipeline_class_name(path)
    except RuntimeModelError as exc:
        raise RuntimeModelError(f"model {spec.name!r}: {exc}") from exc
    if class_name is None or not adapter.accepts_class(class_name):
        traits = adapter.traits
        raise RuntimeModelError(
            f"model {spec.name!r}: {path} holds a {class_name or 'unknown'} pipeline, "
            f"not a {traits.display_name} one (family {traits.name!r})"
        )
    return adapter.load_folder(path, dtype)


def _load_checkpoint(
    spec: ModelSpec, adapter: FamilyAdapter, path: Path, dtype: torch.dtype, config_dir: Path | None
) -> Any:
    traits = adapter.traits
    if path.suffix.lower() != ".safetensors":
        # .ckpt/.pt files are pickles that can run code when loaded.
        raise RuntimeModelError(
            f"model {spec.name!r}: {path.name} is not a .safetensors file; "
            "pickle checkpoints (.ckpt, .pt, .bin) are not loaded"
        )
    if not traits.single_file:
        raise RuntimeModelError(
            f"model {spec.name!r}: single-file checkpoints are not served for family {traits.name!r}; "
            f"point it at a {traits.display_name} diffusers folder (model_index.json inside)"
        )
    if config_dir is not None:
        # A config folder of another family would otherwise fail deep inside diffusers,
        # with a message about tensor shapes rather than about the folder.
        try:
            class_name = pipeline_class_name(config_dir)
        except RuntimeModelError as exc:
            raise RuntimeModelError(f"model {spec.name!r}: {exc}") from exc
        if class_name is None or not adapter.accepts_class(class_name):
            raise RuntimeModelError(
                f"model {spec.name!r}: config folder {config_dir} describes a {class_name or 'unknown'} "
                f"pipeline, not a {traits.display_name} one (family {traits.name!r})"
            )
    try:
        keys = checkpoint_keys(path)
    except Exception as exc:
        raise RuntimeModelError(f"model {spec.name!r}: {path} is not a readable safetensors file: {exc}") from exc
    problem = adapter.checkpoint_problem(keys)
    if problem is not None:
        article = "an" if traits.display_name[0] in "AEIOU" else "a"
        raise RuntimeModelError(
            f"model {spec.name!r}: {path} is not {article} {traits.display_name} checkpoint: {problem}"
        )
    pipeline = adapter.load_single_file(path, dtype, config_dir)
    unloaded = _unloaded_weights(pipeline)
    if unloaded:
        # diffusers leaves a tensor the checkpoint lacks on the meta device instead of failing.
        raise RuntimeModelError(
            f"model {spec.name!r}: {path} lacks weights the configured architecture has "
            f"(is `config` the right folder?): {', '.join(unloaded[:5])}"
            + (f" and {len(unloaded) - 5} more" if len(unloaded) > 5 else "")
        )
    # diffusers' single-file T5 loader returns the encoder in training mode, dropout on, so
    # the same seed would give a different image each time.
    for module in _torch_modules(pipeline).values():
        module.eval()
    return pipeline


def _torch_modules(pipeline: Any) -> dict[str, torch.nn.Module]:
    import torch

    return {name: module for name, module in pipeline.components.items() if isinstance(module, torch.nn.Module)}


def _unloaded_weights(pipeline: Any) -> list[str]:
    """Names of parameters and buffers that were never given a value (still on the meta device)."""
    names: list[str] = []
    for component, module in _torch_modules(pipeline).items():
        tensors = [*module.named_parameters(), *module.named_buffers()]
        names.extend(f"{component}.{name}" for name, tensor in tensors if tensor.is_meta)
    return names


def _load_vae(spec: ModelSpec, path: Path, reference: Any) -> Any:
    """The VAE override: a diffusers folder, or one .safetensors file in diffusers or original layout."""
    from diffusers import AutoencoderKL

    if not path.exists():
        raise RuntimeModelError(f"model {spec.name!r}: VAE {path} does not exist")
    vae: Any
    if path.is_dir():
        if (path / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True, use_safetensors=True)
        elif (path / "vae" / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True, use_safetensors=True)
        else:
            raise RuntimeModelError(f"model {spec.name!r}: VAE folder {path} has no config.json (nor vae/config.json)")
    elif path.suffix.lower() == ".safetensors":
        # A lone file carries no config: it must fit the model's own VAE architecture.
        with tempfile.TemporaryDirectory(prefix="ponyserve-vae-") as config_dir:
            reference.save_config(Path(config_dir) / "vae")
            vae = AutoencoderKL.from_single_file(str(path), config=config_dir, subfolder="vae", local_files_only=True)
    else:
        raise RuntimeModelError(
            f"model {spec.name!r}: VAE {path.name} is not a .safetensors file or a diffusers folder; "
            "pickle checkpoints are not loaded"
        )
    wanted, got = reference.config.latent_channels, vae.config.latent_channels
    if wanted != got:
        raise RuntimeModelError(f"model {spec.name!r}: VAE {path} has {got} latent channels, the model needs {wanted}")
    return vae


def _configure_vae(spec: ModelSpec, pipeline: Any, dtype: torch.dtype) -> None:
    if spec.vae is not None:
        pipeline.register_modules(vae=_load_vae(spec, Path(spec.vae), pipeline.vae))
    vae_dtype = resolve_vae_dtype(spec.vae_dtype, dtype)
    if pipeline.vae.dtype != vae_dtype:
        pipeline.vae.to(dtype=vae_dtype)
    # The SDXL pipeline's own decode path would otherwise upcast an fp16 VAE to fp32 on
    # every call; the setting says whether full precision was asked for.
    pipeline.vae.register_to_config(force_upcast=spec.vae_dtype == "float32")


def prepare_model(
    spec: ModelSpec,
    pipeline: Any,
    device: str,
    *,
    dtype: torch.dtype | None = None,
    adapter: FamilyAdapter | None = None,
) -> LoadedModel:
    """Make a pipeline already in memory (weights in ``dtype``) servable: what ``load_model`` does after reading.

    Applies the spec's VAE override and VAE dtype, moves everything to
    ``device``, sets the CUDA memory layout, and with ``spec.compile``
    compiles the denoiser and warms every size x batch bucket. Benchmarks use
    it to serve a pipeline built in code through the same steps as a real model.
    """
    adapter = adapter if adapter is not None else adapter_for(spec.family)
    dtype = dtype if dtype is not None else resolve_dtype(spec.dtype, device)
    _configure_vae(spec, pipeline, dtype)
    pipeline.to(device)
    optimize_for_device(pipeline, adapter, device)
    pipeline.set_progress_bar_config(disable=True)
    model = LoadedModel(
        spec,
        device,
        dtype,
        pipeline,
        adapter=adapter,
        batch_buckets=spec.compile_batch_sizes if spec.compile else None,
    )
    if spec.compile:
        sizes = model.warm_up_sizes()
        compile_denoiser(
            pipeline,
            adapter,
            mode=spec.compile_mode,
            expected_graphs=len(sizes) * len(spec.compile_batch_sizes),
        )
        model.warm_up(sizes)
    return model


def load_model(spec: ModelSpec, device: str, *, config_dir: Path | None = None) -> LoadedModel:
    """Load ``spec`` onto ``device``, offline.

    ``spec.path`` is a diffusers folder of the spec's family or one
    ``.safetensors`` checkpoint in the original layout; for a checkpoint,
    ``config_dir`` (default ``spec.config``) names a diffusers folder whose configs
    describe its architecture. SDXL defaults to SDXL base 1.0's (right for Pony
    Diffusion V6 XL); SD3 needs it for configs and tokenizers, AuraFlow for every
    component but the transformer, weights included.
    ``spec.vae``/``vae_dtype`` replace and type the VAE; with ``spec.compile``
    the denoiser is compiled and every batch bucket warmed before this returns.
    Raises ``RuntimeModelError`` when the model is missing or cannot be loaded.
    """
    config_dir = config_dir if config_dir is not None else spec.config
    try:
        adapter = adapter_for(spec.family)
    except KeyError as exc:
        raise RuntimeModelError(
            f"model {spec.name!r}: family {spec.family!r} is not supported by this runtime"
        ) from exc
    path = Path(spec.path)
    if not path.exists():
        raise RuntimeModelError(f"model {spec.name!r}: {path} does not exist")
    if config_dir is not None and not (config_dir / "model_index.json").is_file():
        raise RuntimeModelError(f"model {spec.name!r}: config folder {config_dir} has no model_index.json")
    started = time.monotonic()
    try:
        dtype = resolve_dtype(spec.dtype, device)
        disable_library_progress_bars()
        if path.is_dir():
            pipeline = _load_folder(spec, adapter, path, dtype)
        else:
            pipeline = _load_checkpoint(spec, adapter, path, dtype, config_dir)
        problem = adapter.pipeline_problem(pipeline)
        if problem is not None:
            raise RuntimeModelError(f"model {spec.name!r}: {path}: {problem}")
        model = prepare_model(spec, pipeline, device, dtype=dtype, adapter=adapter)
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
            "family": spec.family,
            "path": str(path),
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "bytes": model.memory_bytes,
            "compiled": spec.compile,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return model
