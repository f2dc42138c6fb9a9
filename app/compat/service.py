"""A1111 requests in, native generations out.

A txt2img body is translated into the native ``GenerationRequest`` and goes
through the same acceptance path as ``POST /v1/images/generations`` (validation,
plan limits, moderation, rate limits, quota reservation, metering); only the
shapes at the edges differ. Errors keep the service's JSON error shape, with
``param`` named after the A1111 field the caller sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import Principal
from app.compat import repository
from app.compat.schemas import (
    LoraItem,
    Options,
    ProgressResponse,
    ProgressState,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    TextToImageResponse,
)
from app.config import ModelSpec
from app.context import AppContext
from app.errors import AppError, GenerationFailed, InvalidRequest, PermissionDenied
from app.generation import image_inputs
from app.generation import service as generation
from app.generation.catalog import ModelCatalog
from app.generation.schemas import MAX_STEPS, GenerationRequest, LatentUpscaler, OutputFormat
from app.kit.clock import utcnow
from app.queue import repository as queue
from app.queue.models import Job, JobOutput, JobStatus
from app.quotas.limits import effective_limits
from app.runtime.encoding import a1111_parameters, read_parameters
from app.runtime.samplers import SAMPLERS, resolve_sampler, sampler_names
from app.settlement import service as settlement

# Native field → the A1111 field a caller would recognise in an error's ``param``.
_A1111_PARAMS = {
    "n": "batch_size",
    "guidance_scale": "cfg_scale",
    "sampler": "sampler_name",
    "model": "override_settings.sd_model_checkpoint",
    "output_format": "override_settings.samples_format",
    "size": "width",
    "init_image": "init_images",
    "hires": "hr_scale",
    "strength": "denoising_strength",
}

# Schedule types ``resolve_sampler`` understands: (name, label, default_rho).
SCHEDULES: tuple[tuple[str, str, float | None], ...] = (
    ("automatic", "Automatic", None),
    ("uniform", "Uniform", None),
    ("karras", "Karras", 7.0),
    ("exponential", "Exponential", None),
)

_SAMPLES_FORMATS: Mapping[str, OutputFormat] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")
_SAFE_KEY = re.compile(r"[^A-Za-z0-9_.\-]")
# How many ignored keys the X-Ignored-Fields header names before it says "...".
_MAX_REPORTED_KEYS = 20
# A1111's default live-preview period (its show_progress_every_n_steps setting), so its clients'
# progress polls get a current_image without asking.
A1111_PREVIEW_EVERY = 10


def _max_n() -> int:
    for constraint in GenerationRequest.model_fields["n"].metadata:
        limit = getattr(constraint, "le", None)
        if limit is not None:
            return int(limit)
    raise RuntimeError("GenerationRequest.n has no upper bound")


MAX_IMAGES = _max_n()


def _unset(value: object) -> bool:
    """A1111 clients write "no value" as null, "" or the string "None"."""
    return value is None or (isinstance(value, str) and value.strip().casefold() in ("", "none"))


def _unsupported(param: str, what: str, hint: str = "") -> InvalidRequest:
    message = f"{what} is not supported by this server." + (f" {hint}" if hint else "")
    return InvalidRequest(message, code="unsupported_parameter", param=param)


# -- models ------------------------------------------------------------------------------


def checkpoint_title(spec: ModelSpec) -> str:
    """The A1111 "title" of a model. A1111 appends " [hash]" once it has hashed the file; we
    never hash multi-gigabyte checkpoints, so, like A1111 before hashing, the title is the name."""
    return spec.name


def _checkpoint_aliases(spec: ModelSpec) -> set[str]:
    return {s.casefold() for s in (spec.name, checkpoint_title(spec), spec.path.name, spec.path.stem)}


def resolve_checkpoint(catalog: ModelCatalog, value: object) -> ModelSpec:
    """The model an ``sd_model_checkpoint`` value names: its name, title or file name, with or
    without A1111's " [hash]" suffix."""
    specs = catalog.specs()
    if isinstance(value, str):
        wanted = _HASH_SUFFIX.sub("", value).strip().casefold()
        for spec in specs:
            if wanted in _checkpoint_aliases(spec):
                return spec
    titles = ", ".join(checkpoint_title(s) for s in specs)
    raise InvalidRequest(f"Unknown checkpoint {value!r}. Available: {titles} (see GET /sdapi/v1/sd-models).",
                         code="model_not_found", param="override_settings.sd_model_checkpoint")


def sd_models(catalog: ModelCatalog, principal: Principal) -> list[SDModelItem]:
    limits = effective_limits(principal.account, principal.key)
    return [
        SDModelItem(title=checkpoint_title(spec), model_name=spec.name, filename=spec.path.name)
        for spec in catalog.specs()
        if limits.allows_model(spec.name)
    ]


# -- samplers ----------------------------------------------------------------------------


def loras(catalog: ModelCatalog) -> list[LoraItem]:
    return [LoraItem(name=spec.name, alias=spec.name, path=spec.path.name,
                     metadata={"family": spec.family, "default_weight": spec.default_weight,
                               "trigger_words": list(spec.trigger_words), "license": spec.license})
            for spec in catalog.loras.specs()]


def samplers() -> list[SamplerItem]:
    items = []
    for sampler in SAMPLERS.values():
        options: dict[str, Any] = {"diffusers_scheduler": sampler.scheduler_class}
        for _, label, _ in SCHEDULES[2:]:
            if sampler.name.endswith(f" {label}"):
                options["scheduler"] = label.casefold()
        items.append(SamplerItem(name=sampler.name, aliases=list(sampler.aliases), options=options))
    return items


def schedulers() -> list[SchedulerItem]:
    return [SchedulerItem(name=name, label=label, aliases=None, default_rho=rho if rho is not None else -1.0,
                          need_inner_model=False) for name, label, rho in SCHEDULES]


def _sampler(body: StableDiffusionProcessingTxt2Img, spec: ModelSpec) -> str:
    name = body.sampler_name if not _unset(body.sampler_name) else body.sampler_index
    explicit = not _unset(name)
    chosen = name.strip() if explicit and name is not None else spec.defaults.sampler
    schedule = None if _unset(body.scheduler) else body.scheduler
    try:
        return resolve_sampler(chosen, schedule)
    except KeyError:
        pass
    schedule_labels = ", ".join(label for _, label, _ in SCHEDULES)
    accepted = f"Accepted samplers: {', '.join(sampler_names())}. Accepted schedulers: {schedule_labels}."
    try:
        resolve_sampler(chosen)
    except KeyError:
        raise InvalidRequest(f"Unknown sampler '{chosen}'. {accepted}", code="invalid_sampler",
                             param="sampler_name") from None
    raise InvalidRequest(
        f"Sampler '{chosen}' cannot run with scheduler '{schedule}'. {accepted} Karras and Exponential apply to "
        "the samplers listed with that suffix.", code="invalid_sampler", param="scheduler",
    )


# -- txt2img -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Txt2ImgPlan:
    """A txt2img body as the native service sees it, plus what only the A1111 response needs."""

    request: GenerationRequest
    batch_size: int
    n_iter: int
    clip_skip: int
    ignored: list[str]


def _refuse_unsupported(body: StableDiffusionProcessingTxt2Img) -> None:
    """Fields whose non-default values would change the image in ways we cannot reproduce."""
    if body.enable_hr:
        if body.hr_upscaler not in (None, "", *get_args(LatentUpscaler)):
            raise _unsupported("hr_upscaler", f"The {body.hr_upscaler!r} upscaler",
                               f"Latent upscalers are: {', '.join(get_args(LatentUpscaler))}.")
        for param in ("hr_resize_x", "hr_resize_y"):
            if (getattr(body, param) or 0) > 0:
                raise _unsupported(param, f"Hires. fix to a fixed size ({param})", "Use hr_scale.")
        for param in ("hr_checkpoint_name", "hr_sampler_name", "hr_prompt", "hr_negative_prompt"):
            if not _unset(getattr(body, param)) and getattr(body, param) not in ("Use same checkpoint",
                                                                                 "Use same sampler"):
                raise _unsupported(param, f"A different {param.removeprefix('hr_').replace('_', ' ')} for the "
                                          "hires pass")
    if body.restore_faces:
        raise _unsupported("restore_faces", "Face restoration (restore_faces)")
    if body.tiling:
        raise _unsupported("tiling", "Tiling")
    if body.styles:
        raise _unsupported("styles", "Saved prompt styles (styles)", "Put the style's text in the prompt.")
    if body.subseed_strength:
        raise _unsupported("subseed_strength", "Variation seeds (subseed_strength other than 0)")
    for param in ("seed_resize_from_h", "seed_resize_from_w"):
        value = getattr(body, param)
        if value is not None and value > 0:
            raise _unsupported(param, f"Resizing the seed ({param})")
    for param, what in (("refiner_checkpoint", "A refiner (refiner_checkpoint)"),
                        ("firstpass_image", "A first-pass image (firstpass_image)"),
                        ("infotext", "Applying an infotext (infotext)"),
                        ("script_name", "Scripts (script_name)")):
        if not _unset(getattr(body, param)):
            raise _unsupported(param, what)
    for name, script in (body.alwayson_scripts or {}).items():
        if not _script_disabled(script):
            raise _unsupported(f"alwayson_scripts.{name}", f"The always-on script '{name}'",
                               "Leave it out, or send it switched off.")


def _script_disabled(script: object) -> bool:
    """A1111 clients leave extensions in ``alwayson_scripts`` switched off: ``{"args": []}``,
    ``{"args": [false, ...]}``, or units that all say ``"enabled": false`` (ControlNet)."""
    if not isinstance(script, Mapping):
        return False
    args = script.get("args")
    if args is None or args == []:
        return True
    if not isinstance(args, list):
        return False
    if args[0] is False:
        return True
    return all(isinstance(a, Mapping) and a.get("enabled") is False for a in args)


@dataclass(frozen=True)
class _Overrides:
    spec: ModelSpec | None
    output_format: OutputFormat
    clip_skip: int | None
    ignored: list[str]
    preview_every: int = A1111_PREVIEW_EVERY  # 0: no live previews


def _overrides(settings: Mapping[str, Any] | None, catalog: ModelCatalog) -> _Overrides:
    settings = settings or {}
    spec = None
    output_format: OutputFormat = "png"
    clip_skip = None
    ignored = []
    preview_every, live_previews = A1111_PREVIEW_EVERY, True
    for key, value in settings.items():
        param = f"override_settings.{key}"
        if key == "sd_model_checkpoint":
            spec = None if _unset(value) else resolve_checkpoint(catalog, value)
        elif key == "samples_format":
            fmt = "png" if _unset(value) else _SAMPLES_FORMATS.get(str(value).strip().casefold())
            if fmt is None:
                raise InvalidRequest(f"samples_format must be one of {', '.join(_SAMPLES_FORMATS)}.",
                                     code="invalid_value", param=param)
            output_format = fmt
        elif key == "CLIP_stop_at_last_layers":
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
                raise InvalidRequest("CLIP_stop_at_last_layers must be an integer from 1 to 12.",
                                     code="invalid_value", param=param)
            clip_skip = value
        elif key == "sd_vae":
            if not (_unset(value) or str(value).strip().casefold() == "automatic"):
                raise _unsupported(param, "Choosing a VAE (sd_vae other than 'Automatic')",
                                   "Each model uses the VAE its operator configured.")
        elif key == "eta_noise_seed_delta":
            if value not in (None, 0):
                raise _unsupported(param, "eta_noise_seed_delta other than 0")
        elif key == "sdxl_clip_l_skip":
            if value:
                raise _unsupported(param, "sdxl_clip_l_skip")
        elif key == "show_progress_every_n_steps":
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_STEPS:
                raise InvalidRequest(f"show_progress_every_n_steps must be an integer from -1 to {MAX_STEPS}.",
                                     code="invalid_value", param=param)
            # A1111's -1 shows each image once it is finished: no live preview, as 0.
            preview_every = max(value, 0)
        elif key == "live_previews_enable":
            if value is None:
                continue
            if not isinstance(value, bool):
                raise InvalidRequest("live_previews_enable must be true or false.", code="invalid_value", param=param)
            live_previews = value
        else:
            ignored.append(param)
    return _Overrides(spec, output_format, clip_skip, ignored, preview_every if live_previews else 0)


@contextmanager
def a1111_params() -> Iterator[None]:
    """Renames an error's ``param`` from the native field to the A1111 one the caller sent."""
    try:
        yield
    except AppError as exc:
        if exc.param in _A1111_PARAMS:
            exc.param = _A1111_PARAMS[exc.param]
        raise


def _native_request(fields: dict[str, Any]) -> GenerationRequest:
    return generation.parse_request(fields, rename=_A1111_PARAMS)


# A1111's extra-network syntax for LoRAs: <lora:name>, <lora:name:weight>, <lora:name:te_weight:unet_weight>.
_LORA_TAG = re.compile(r"<lora:([^:<>]+)((?::[^:<>]*){0,2})>", re.IGNORECASE)


def _number(text: str, tag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidRequest(f"'{tag}' in the prompt: '{text}' is not a LoRA weight.", code="invalid_lora_tag",
                             param="prompt")
    return value


def extract_lora_tags(prompt: str) -> tuple[str, list[dict[str, object]]]:
    """The prompt without its ``<lora:…>`` tags, and the LoRAs they name (as the native ``loras`` field).

    As in A1111: one weight applies to both the text encoders and the denoiser, two are the text
    encoders' then the denoiser's, none is 1. A name given twice is a 400 (A1111 would apply it twice).
    """
    loras: list[dict[str, object]] = []
    for match in _LORA_TAG.finditer(prompt):
        tag, name = match.group(0), match.group(1).strip()
        weights = [w.strip() for w in match.group(2).split(":")[1:]]
        if len(weights) == 2:
            te, unet = _number(weights[0], tag), _number(weights[1], tag)
        else:
            unet = te = _number(weights[0], tag) if weights and weights[0] else 1.0
        loras.append({"name": name, "weight": unet, "text_encoder_weight": te})
    text = re.sub(r"\s{2,}", " ", _LORA_TAG.sub("", prompt)).strip(" ,")
    return text, loras


def _hires(body: StableDiffusionProcessingTxt2Img) -> dict[str, Any] | None:
    """A1111's hires. fix fields as the native ``hires``: hr_scale, denoising_strength (A1111's default 0.7 here),
    hr_second_pass_steps (0 = the first pass's), hr_upscaler (latent ones)."""
    if not body.enable_hr or isinstance(body, StableDiffusionProcessingImg2Img):
        return None
    return {"scale": body.hr_scale if body.hr_scale is not None else 2.0,
            "denoise": body.denoising_strength if body.denoising_strength is not None else 0.7,
            "steps": body.hr_second_pass_steps or None, "upscaler": body.hr_upscaler or "Latent"}


def translate(body: StableDiffusionProcessingTxt2Img, principal: Principal, catalog: ModelCatalog) -> Txt2ImgPlan:
    """The native request for an A1111 txt2img body; raises on anything we cannot honour."""
    _refuse_unsupported(body)
    if body.prompt is None or not body.prompt.strip():
        raise InvalidRequest("prompt must not be empty.", code="missing_field", param="prompt")
    prompt, loras = extract_lora_tags(body.prompt)
    if not prompt:
        raise InvalidRequest("The prompt has nothing but LoRA tags; say what to draw.", code="missing_field",
                             param="prompt")
    overrides = _overrides(body.override_settings, catalog)
    spec = overrides.spec or catalog.get(None)
    # A1111 applies clip skip to SD1.x/2.x only: SDXL's text encoders always use their penultimate
    # layer there (unless sdxl_clip_l_skip is set), so on SDXL it is accepted and ignored as there.
    # Elsewhere a request cannot change it: the model's configured clip skip applies.
    if overrides.clip_skip is not None and spec.family != "sdxl" and overrides.clip_skip != spec.clip_skip:
        raise _unsupported("override_settings.CLIP_stop_at_last_layers",
                           f"Choosing the clip skip of model '{spec.name}' ({spec.family})")
    batch_size, n_iter = body.batch_size or 1, body.n_iter or 1
    n = batch_size * n_iter
    limits = effective_limits(principal.account, principal.key)
    if n > limits.max_n:
        raise PermissionDenied(
            f"batch_size × n_iter = {batch_size} × {n_iter} = {n} images exceeds your plan's limit of "
            f"{limits.max_n} images per request ('{principal.plan.code}').",
            code="plan_limit_exceeded", param="batch_size",
        )
    if n > MAX_IMAGES:
        raise InvalidRequest(f"batch_size × n_iter = {batch_size} × {n_iter} = {n} images; at most {MAX_IMAGES} "
                             "per request.", code="invalid_value", param="batch_size")
    # A period longer than the job (A1111 then shows no live preview) must not make the native
    # request invalid, so it becomes "none" here, against the steps the job will run.
    steps = body.steps if body.steps is not None else spec.defaults.steps
    preview_every = overrides.preview_every if 0 < overrides.preview_every <= steps else None
    seed = body.seed
    if seed is not None and seed < -1:
        raise InvalidRequest("seed must be -1 (random) or a non-negative integer.", code="invalid_seed",
                             param="seed")
    request = _native_request({
        "prompt": prompt,
        "loras": loras or None,
        "model": spec.name,
        "n": n,
        "negative_prompt": None if _unset(body.negative_prompt) else body.negative_prompt,
        "width": body.width,
        "height": body.height,
        "steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "sampler": _sampler(body, spec),
        "seed": None if seed is None or seed == -1 else seed,
        "output_format": overrides.output_format,
        "response_format": "b64_json",
        "preview_every": preview_every,
        "hires": _hires(body),
    })
    ignored = sorted(body.model_extra or {}) + overrides.ignored
    return Txt2ImgPlan(request=request, batch_size=batch_size, n_iter=n_iter,
                       clip_skip=spec.clip_skip or overrides.clip_skip or 1,
                       ignored=ignored)


def ignored_fields_header(keys: list[str]) -> str:
    """Header-safe (ASCII) list of the keys a request carried that had no effect."""
    shown = [_SAFE_KEY.sub("?", k)[:64] for k in keys[:_MAX_REPORTED_KEYS]]
    if len(keys) > _MAX_REPORTED_KEYS:
        shown.append("...")
    return ", ".join(shown)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def build_info(job: Job, outputs: list[JobOutput], infotexts: list[str], plan: Txt2ImgPlan) -> dict[str, Any]:
    """A1111's ``Processed.js()`` for a finished job's delivered images, plus the job and image ids."""
    count = len(outputs)
    seeds = [o.seed for o in outputs]
    return {
        "prompt": job.revised_prompt,
        "all_prompts": [job.revised_prompt] * count,
        "negative_prompt": job.revised_negative_prompt,
        "all_negative_prompts": [job.revised_negative_prompt] * count,
        "seed": job.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": job.width,
        "height": job.height,
        "sampler_name": job.sampler,
        "cfg_scale": job.guidance_scale,
        "steps": job.steps,
        "batch_size": plan.batch_size,
        "n_iter": plan.n_iter,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": job.model,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": None,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": _timestamp(job.created_at),
        "clip_skip": plan.clip_skip,
        "is_using_inpainting_conditioning": False,
        "job_id": job.id,
        "image_ids": [o.id for o in outputs],
    }


def _infotext(job: Job, output: JobOutput, data: bytes) -> str:
    embedded = read_parameters(data)
    if embedded is not None:
        return embedded
    return a1111_parameters(prompt=job.revised_prompt, negative_prompt=job.revised_negative_prompt,
                            steps=job.steps, sampler=job.sampler, guidance_scale=job.guidance_scale,
                            seed=output.seed, width=job.width, height=job.height, model=job.model)


_RESIZE_MODES = {0: "resize", 1: "crop", 2: "fill", 3: "resize"}
_FILLS = {0: "fill", 1: "original", 2: "noise", 3: "blank"}


def translate_img2img(body: StableDiffusionProcessingImg2Img, principal: Principal,
                      catalog: ModelCatalog) -> Txt2ImgPlan:
    """An A1111 img2img body as a native request: txt2img's translation plus the image inputs."""
    if not body.init_images:
        raise InvalidRequest("init_images needs one image.", code="missing_field", param="init_images")
    if len(body.init_images) > 1:
        raise _unsupported("init_images", "More than one init image")
    if body.resize_mode not in (None, *_RESIZE_MODES):
        raise InvalidRequest("resize_mode is 0, 1, 2 or 3.", code="invalid_value", param="resize_mode")
    if body.inpainting_fill not in (None, *_FILLS):
        raise InvalidRequest("inpainting_fill is 0, 1, 2 or 3.", code="invalid_value", param="inpainting_fill")
    plan = translate(body, principal, catalog)
    blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x or 0, body.mask_blur_y or 0)
    update: dict[str, Any] = {
        "init_image": body.init_images[0], "mask": body.mask or None,
        "strength": body.denoising_strength if body.denoising_strength is not None else 0.75,
        "resize_mode": _RESIZE_MODES[body.resize_mode or 0],
        "mask_blur": blur if body.mask else 0, "mask_invert": bool(body.inpainting_mask_invert),
        "mask_fill": _FILLS[body.inpainting_fill if body.inpainting_fill is not None else 0] if body.mask
        else "original",
        "mask_padding": max(0, body.inpaint_full_res_padding or 0) if body.mask and body.inpaint_full_res else None,
    }
    # A1111 sizes img2img by width/height (default 512); omitted here, the init image's size.
    fields = plan.request.model_dump(exclude_unset=True) | update
    return Txt2ImgPlan(request=_native_request(fields), batch_size=plan.batch_size, n_iter=plan.n_iter,
                       clip_skip=plan.clip_skip, ignored=plan.ignored)


async def txt2img(
    ctx: AppContext, principal: Principal, body: StableDiffusionProcessingTxt2Img, *,
    idempotency_key: str | None, disconnected: Callable[[], Awaitable[bool]],
) -> tuple[TextToImageResponse, dict[str, str]]:
    """Runs one A1111 txt2img or img2img request to the end; returns the response body and its headers."""
    if isinstance(body, StableDiffusionProcessingImg2Img):
        plan, endpoint = translate_img2img(body, principal, ctx.catalog), "sdapi.img2img"
    else:
        plan, endpoint = translate(body, principal, ctx.catalog), "sdapi.txt2img"
    with a1111_params():
        accepted = await generation.accept(ctx.db, principal, plan.request, ctx.catalog, endpoint=endpoint,
                                           max_queue_depth=ctx.settings.max_queue_depth,
                                           idempotency_key=idempotency_key, store=ctx.store,
                                    image_urls=image_inputs.UrlPolicy.from_settings(ctx.settings))
    headers = accepted.headers()
    if plan.ignored:
        headers["X-Ignored-Fields"] = ignored_fields_header(plan.ignored)
    ctx.events.work_available()
    job = await generation.wait_for_result(ctx.db, ctx.events, accepted.job.id, ctx.settings.max_wait_seconds,
                                           headers=headers, disconnected=disconnected)
    if job.status != JobStatus.SUCCEEDED:
        raise GenerationFailed(job.error_message or f"Generation {job.status}.",
                               code=job.error_code or "generation_failed", headers=headers)
    async with ctx.db.unit_of_work() as session:
        every = list(await queue.outputs_of(session, job.id, include_withheld=True))
    # Images held back by moderation are never sent; the info names them so a partner can follow up.
    outputs = [o for o in every if not o.withheld]
    blobs = await asyncio.to_thread(lambda: [ctx.store.get(o.storage_key) for o in outputs])
    infotexts = await asyncio.to_thread(
        lambda: [_infotext(job, o, data) for o, data in zip(outputs, blobs, strict=True)]
    )
    images = [base64.b64encode(data).decode() for data in blobs] if body.send_images is not False else []
    parameters = body.model_dump(exclude=set(body.model_extra or {}))
    info = build_info(job, outputs, infotexts, plan)
    info["withheld_image_ids"] = [o.id for o in every if o.withheld]
    return TextToImageResponse(images=images, parameters=parameters, info=json.dumps(info)), headers


# -- options and progress --------------------------------------------------------------------


def options(catalog: ModelCatalog) -> Options:
    return Options(sd_model_checkpoint=checkpoint_title(catalog.get(None)))


def check_options_update(catalog: ModelCatalog, update: Mapping[str, Any]) -> None:
    """Server settings are shared by every partner, so they cannot be changed here. An update
    that changes nothing (a client re-applying what GET /sdapi/v1/options returned) is accepted."""
    current = options(catalog).model_dump()
    for key, value in update.items():
        if key == "sd_model_checkpoint":
            try:
                unchanged = resolve_checkpoint(catalog, value).name == catalog.default_name
            except InvalidRequest:
                unchanged = False
        elif key == "samples_format":
            unchanged = _SAMPLES_FORMATS.get(str(value).casefold()) == "png"
        else:
            unchanged = key in current and value == current[key]
        if not unchanged:
            raise InvalidRequest(
                f"Settings cannot be changed on this server: they are shared by every API key. Send '{key}' with "
                "each request instead, in txt2img's override_settings.",
                code="options_read_only", param=key,
            )


async def progress(session: AsyncSession, principal: Principal, *, skip_current_image: bool = False
                   ) -> ProgressResponse:
    account_id = principal.account.id
    job = await repository.current_job(session, account_id)
    if job is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState())
    state = ProgressState(
        interrupted=job.cancel_requested, job=job.id, job_count=await repository.active_count(session, account_id),
        job_timestamp=_timestamp(job.created_at), sampling_step=job.progress_step, sampling_steps=job.steps,
    )
    if job.status == JobStatus.QUEUED:
        ahead = await queue.queue_position(session, job)
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=state,
                                textinfo=f"Queued: {ahead} generation(s) ahead")
    fraction = min(1.0, max(0.0, job.progress_step / job.steps)) if job.steps else 0.0
    eta = 0.0
    if fraction > 0 and job.started_at is not None:
        elapsed = max(0.0, (utcnow() - job.started_at).total_seconds())
        eta = elapsed / fraction - elapsed
    # Raw base64 without a data: prefix, as A1111's encode_pil_to_base64 sends it.
    current_image = job.preview if job.status == JobStatus.RUNNING and not skip_current_image else None
    return ProgressResponse(progress=fraction, eta_relative=round(eta, 3), state=state, current_image=current_image,
                            textinfo=f"Sampling step {job.progress_step}/{job.steps}")


async def stop_current(session: AsyncSession, ctx: AppContext, principal: Principal) -> str | None:
    """A1111's interrupt: the key's current job is cancelled (not charged); its id, or None if it had none."""
    job = await repository.current_job_of_key(session, principal.key.id)
    if job is None or not await settlement.cancel(session, job.id, utcnow()):
        return None
    await session.commit()
    ctx.events.job_changed(job.id)
    return job.id
