"""AUTOMATIC1111-compatible routes (scope ``generate``): point an A1111 client at this server.

Authenticate with `Authorization: Bearer <key>`, or, as A1111's `--api-auth`
clients do, with Basic auth whose password is the key (any user name).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from app.accounts.auth import GenerateCaller
from app.compat import service
from app.compat.schemas import (
    Options,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    StableDiffusionProcessingTxt2Img,
    TextToImageResponse,
)
from app.context import ContextDep
from app.db import SessionDep
from app.errors import COMMON_ERROR_RESPONSES, SYNC_GENERATION_ERROR_RESPONSES, ErrorResponse
from app.generation.endpoints import IdempotencyKeyHeader

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
    - **Defaults**: an omitted or null `steps`, `cfg_scale`, `width`, `height`,
      sampler or model takes the model's default (see `GET /v1/models`), not
      A1111's fixed 50 steps / CFG 7 / 512×512. An empty `negative_prompt` takes
      the model's default negative prompt.
    - **Refused (400, `unsupported_parameter`) unless left at their defaults**:
      `enable_hr`, `restore_faces`, `tiling`, `styles`, `subseed_strength`,
      `seed_resize_from_*`, `refiner_checkpoint`, `firstpass_image`, `infotext`,
      `script_name`, enabled `alwayson_scripts`, and the `override_settings`
      `sd_vae`, `eta_noise_seed_delta` and `sdxl_clip_l_skip`.
    - **Accepted and ignored**: `save_images` (every image is stored anyway; its id
      is in `info.image_ids` and `GET /v1/images/{id}` returns it),
      `do_not_save_*`, `eta`, `s_*` sampler tuning, `denoising_strength` and the
      `hr_*` fields (hires. fix only), `override_settings_restore_afterwards`
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
