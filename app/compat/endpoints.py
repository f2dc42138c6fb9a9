"""AUTOMATIC1111-compatible routes (scope ``generate``): point an A1111 client at this server.

Authenticate with `Authorization: Bearer <key>`, or, as A1111's `--api-auth`
clients do, with Basic auth whose password is the key (any user name).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from app.accounts.auth import GenerateCaller
from app.compat import infotext, service
from app.compat.schemas import (
    LoraItem,
    Options,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    TextToImageResponse,
)
from app.context import ContextDep
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, SYNC_GENERATION_ERROR_RESPONSES, ErrorResponse, ServiceUnavailable
from app.generation.endpoints import IdempotencyKeyHeader
from app.generation.uploads import decode_base64_image

log = logging.getLogger("ponyserve.compat")
router = APIRouter(prefix="/sdapi/v1", tags=["a1111-compat"], responses=COMMON_ERROR_RESPONSES)


@router.post(
    "/txt2img",
    response_model=TextToImageResponse,
    responses=SYNC_GENERATION_ERROR_RESPONSES,
)
async def txt2img(
    body: StableDiffusionProcessingTxt2Img,
    caller: GenerateCaller,
    ctx: ContextDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TextToImageResponse:
    """Generate images from a prompt — AUTOMATIC1111's txt2img, metered like `POST /v1/images/generations`.

    Synchronous: the connection is held until the images are ready (disconnecting
    cancels the job, which is then not charged). `batch_size × n_iter` images are
    made, with seeds `seed, seed+1, …` as in A1111, and count against your plan's
    per-request image limit.

    How A1111 fields are treated:

    - **Honoured**: `prompt`, `negative_prompt`, `seed` (-1 = random), `sampler_name`
      (or the deprecated `sampler_index`) and A1111 1.9's `scheduler`, `steps`,
      `cfg_scale`, `width`, `height`, `batch_size`, `n_iter`, `send_images`, and in
      `override_settings`: `sd_model_checkpoint` (a title from `GET /sdapi/v1/sd-models`,
      the model name or its file name, with or without " [hash]"), `samples_format`,
      and `show_progress_every_n_steps` / `live_previews_enable`, which set how often
      a live preview reaches `GET /sdapi/v1/progress`'s `current_image` (every 10
      steps unless told otherwise, as in A1111).
    - **Hires. fix**: `enable_hr` with `hr_scale` (1–4), `denoising_strength` (default
      0.7), `hr_second_pass_steps` (0 = `steps`) and a latent `hr_upscaler` (`Latent`,
      `Latent (antialiased)`, `Latent (bicubic)`, `Latent (bicubic antialiased)`,
      `Latent (nearest)`, `Latent (nearest-exact)`; others, `hr_resize_x/y` and a different
      hires checkpoint, sampler or prompt are refused). Metered for both passes.
    - **Defaults**: an omitted or null `steps`, `cfg_scale`, `width`, `height`,
      sampler or model takes the model's default (see `GET /v1/models`), not
      A1111's fixed 50 steps / CFG 7 / 512×512. An empty `negative_prompt` takes
      the model's default negative prompt.
    - **Refused (400, `unsupported_parameter`) unless left at their defaults**:
      `restore_faces`, `tiling`, `styles`, `subseed_strength`,
      `seed_resize_from_*`, `refiner_checkpoint`, `firstpass_image`, `infotext`,
      `script_name`, enabled `alwayson_scripts`, and the `override_settings`
      `sd_vae`, `eta_noise_seed_delta` and `sdxl_clip_l_skip`.
    - **Accepted and ignored**: `save_images` (every image is stored anyway; its id
      is in `info.image_ids` and `GET /v1/images/{id}` returns it),
      `do_not_save_*`, `eta`, `s_*` sampler tuning, `override_settings_restore_afterwards`
      (settings never outlive a request), `CLIP_stop_at_last_layers` (like A1111,
      no effect on SDXL), other `override_settings` keys, and **unknown fields**,
      which A1111 also ignores. The ignored unknown keys are listed in the
      `X-Ignored-Fields` response header.

    The response is A1111's: `images` (base64, PNG unless `samples_format` says
    otherwise, each carrying A1111's `parameters` text), `parameters` (the request
    as received) and `info`, a JSON string with `seed`, `all_seeds`, `prompt` and
    `all_prompts` (after the model's prompt template), `negative_prompt`,
    `sampler_name`, `steps`, `cfg_scale`, `width`, `height`, `sd_model_name`,
    `infotexts`, and ponyserve's `job_id`, `image_ids` and `withheld_image_ids`.

    Prompts are screened exactly as on the native API (a refusal is 400
    `content_policy_violation`), and an image the output check holds for review
    is never sent: it is left out of `images` and listed in `withheld_image_ids`.
    """
    result, headers = await service.txt2img(ctx, caller, body, idempotency_key=idempotency_key,
                                            disconnected=request.is_disconnected)
    response.headers.update(headers)
    return result


@router.get("/sd-models", response_model=list[SDModelItem])
async def sd_models(caller: GenerateCaller, ctx: ContextDep) -> list[SDModelItem]:
    """The models this key may use. Put a `title` in txt2img's
    `override_settings.sd_model_checkpoint` to choose one; `hash` and `sha256` are null
    because checkpoints are not hashed here."""
    return service.sd_models(ctx.catalog, caller)


@router.post(
    "/img2img",
    response_model=TextToImageResponse,
    responses={413: {"model": ErrorResponse}, **SYNC_GENERATION_ERROR_RESPONSES},
)
async def img2img(
    body: StableDiffusionProcessingImg2Img,
    caller: GenerateCaller,
    ctx: ContextDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TextToImageResponse:
    """AUTOMATIC1111's img2img and inpainting, metered like any generation; fields as txt2img, plus:

    - **Honoured**: `init_images` (exactly one, base64 or a data: URL; PNG, JPEG or WebP up to
      4096×4096), `denoising_strength`, `resize_mode` (0 just resize, 1 crop and resize, 2 resize
      and fill, 3 as 0), and for inpainting `mask` (white = repaint; the size of the init image),
      `mask_blur` (or the larger of `mask_blur_x`/`mask_blur_y`), `inpainting_fill` (0 fill,
      1 original, 2 latent noise, 3 latent nothing — done in pixel space before encoding),
      `inpainting_mask_invert`, `inpaint_full_res` with `inpaint_full_res_padding` (only the
      masked area, at full resolution, scaled back into place). Pixels outside the mask come back
      unchanged.
    - **Size**: `width`/`height` as sent; omitted, the init image's (down to a multiple of 8).
    - **Refused**: more than one init image, families without an
      img2img pipeline in diffusers (AuraFlow).

    Bodies up to 32 MiB on this route."""
    result, headers = await service.txt2img(ctx, caller, body, idempotency_key=idempotency_key,
                                            disconnected=request.is_disconnected)
    response.headers.update(headers)
    return result


@router.post("/png-info", response_model=PNGInfoResponse,
             responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}})
async def png_info(_: GenerateCaller, body: PNGInfoRequest) -> PNGInfoResponse:
    """The generation parameters an image carries (ours or A1111's): `info` as written, `parameters`
    parsed, `items` its other text. Bodies up to 32 MiB (the image is base64 in JSON)."""
    upload = decode_base64_image(body.image, param="image")
    info, items = await asyncio.to_thread(infotext.read, upload.data)
    return PNGInfoResponse(info=info, items=items, parameters=infotext.parse(info) if info else {})


@router.post("/interrupt", response_model=None)
async def interrupt(caller: GenerateCaller, ctx: ContextDep, session: SessionDep) -> None:
    """Stops this key's current generation (the running one, else the newest queued one), which ends
    `cancelled` and is not charged. Never another key's. Nothing to stop is fine."""
    await service.stop_current(session, ctx, caller)


@router.post("/skip", response_model=None)
async def skip(caller: GenerateCaller, ctx: ContextDep, session: SessionDep) -> None:
    """As `interrupt`: a job here is one pipeline call, so there is no next image of it to go on to."""
    await service.stop_current(session, ctx, caller)


@router.get("/loras", response_model=list[LoraItem])
async def loras(_: GenerateCaller, ctx: ContextDep) -> list[LoraItem]:
    """The LoRAs a prompt may name with `<lora:name:weight>` (or `<lora:name:te_weight:unet_weight>`).
    An unknown name is a 400, not silently prompt text."""
    return service.loras(ctx.catalog)


@router.post("/refresh-loras", response_model=None)
async def refresh_loras(_: GenerateCaller, ctx: ContextDep) -> None:
    """Re-reads the LoRA list from the models file, so a LoRA the operator just added can be used
    (workers re-read theirs when a job names one they do not know). If the file cannot be read now,
    the list stays as it was and the answer is 503 `lora_list_unreadable`."""
    try:
        await asyncio.to_thread(ctx.catalog.loras.refresh)
    except Exception as exc:
        log.warning("LoRA list refresh failed: %s", exc)
        raise ServiceUnavailable("The LoRA list could not be re-read; the previous one stays in use.",
                                 code="lora_list_unreadable", headers={"Retry-After": "30"}) from None


@router.get("/samplers", response_model=list[SamplerItem])
async def samplers(_: GenerateCaller) -> list[SamplerItem]:
    """Samplers txt2img accepts in `sampler_name`: A1111 names, and their `aliases`
    (k-diffusion and ComfyUI spellings). `options.scheduler` marks the Karras and
    Exponential variants; `options.diffusers_scheduler` names the diffusers class that
    runs it."""
    return service.samplers()


@router.get("/schedulers", response_model=list[SchedulerItem])
async def schedulers(_: GenerateCaller) -> list[SchedulerItem]:
    """Schedule types txt2img accepts in `scheduler` (A1111 1.9+). `Automatic` and
    `Uniform` keep the sampler's own schedule; `Karras` and `Exponential` select the
    sampler's variant of that name, which must exist in `GET /sdapi/v1/samplers`."""
    return service.schedulers()


@router.get("/options", response_model=Options)
async def get_options(_: GenerateCaller, ctx: ContextDep) -> Options:
    """The settings every request starts from: `sd_model_checkpoint` is the default
    model's title, `samples_format` the default image format."""
    return service.options(ctx.catalog)


@router.post("/options", response_model=None, responses={400: {"model": ErrorResponse}})
async def set_options(
    _: GenerateCaller, ctx: ContextDep, update: Annotated[dict[str, Any], Body()],
) -> None:
    """Not a way to change settings here: this server is shared, so settings are chosen
    per request, in txt2img's `override_settings` (e.g. `sd_model_checkpoint`).

    An update that changes nothing (values equal to `GET /sdapi/v1/options`) is
    accepted, so clients that re-apply the current settings keep working; any real
    change is refused with 400 `options_read_only`, naming the key in `param`.
    """
    service.check_options_update(ctx.catalog, update)


@router.get("/progress", response_model=ProgressResponse)
async def progress(
    caller: GenerateCaller,
    session: SessionDep,
    skip_current_image: Annotated[bool, Query(description="true: leave current_image null, to save bandwidth.")
                                  ] = False,
) -> ProgressResponse:
    """Progress of your account's current generation: the newest running one, else the
    newest queued one (`state.job` is its id, usable with `GET /v1/generations/{id}`).

    `progress` runs from 0 to 1 over the sampling steps; `eta_relative` estimates the
    seconds left from the time per step so far; `state.job_count` counts your queued and
    running generations. With nothing queued or running, everything is zero.

    `current_image` is the running generation's newest live preview, base64 without a
    `data:` prefix as in A1111: a small JPEG at an eighth of the image's width and
    height, drawn straight from the latents (grainy in early steps). txt2img makes one
    every 10 steps, A1111's default; set `override_settings.show_progress_every_n_steps`
    (0 for none) or `live_previews_enable: false` to change that. Native generations
    have previews only when created with `preview_every`. It is null while queued,
    before the first preview, and with `skip_current_image=true`.
    """
    return await service.progress(session, caller, skip_current_image=skip_current_image)
