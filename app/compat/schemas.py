"""Request and response bodies of AUTOMATIC1111's web API (stable-diffusion-webui 1.10, ``modules/api/models.py``).

Field names, types and nesting follow A1111 so its clients work unchanged. A1111
declares every request field optional and lets a client send ``null`` for any of
them; so do we. ``null`` or an omitted field means "the default", and where A1111
hard-codes a default (50 steps, CFG 7, 512×512) we use the model's own default
instead, because that is what the operator tuned the model for.

Unknown keys are accepted and ignored, as A1111 itself does: clients written for
A1111 forks (Forge, SD.Next) send keys of their own (``distilled_cfg_scale``,
``hr_additional_modules``…) to every backend. The ignored keys are listed in the
``X-Ignored-Fields`` response header.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.kit.request import RequestModel

_TXT2IMG_EXAMPLE: dict[str, Any] = {
    "prompt": "a pony in a meadow, watercolor",
    "negative_prompt": "blurry",
    "seed": -1,
    "sampler_name": "DPM++ 2M",
    "scheduler": "Karras",
    "batch_size": 1,
    "n_iter": 1,
    "steps": 25,
    "cfg_scale": 7,
    "width": 1024,
    "height": 1024,
    "override_settings": {"sd_model_checkpoint": "demo"},
    "send_images": True,
    "save_images": False,
}

_UNSUPPORTED = "Not supported here: only its default value is accepted."
_IGNORED = "Accepted and ignored."


class StableDiffusionProcessingTxt2Img(RequestModel):
    """Body of ``POST /sdapi/v1/txt2img`` (A1111's ``StableDiffusionTxt2ImgProcessingAPI``)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_TXT2IMG_EXAMPLE]})

    prompt: str | None = Field(default="", description="What to draw. Required here: an empty prompt is refused.")
    negative_prompt: str | None = Field(
        default="", description="What to avoid. Empty: the model's default negative prompt (often none)."
    )
    styles: list[str] | None = Field(default=None, description="Saved prompt styles; none exist here, so: empty.")
    seed: int | None = Field(default=-1, description="-1 for a random seed. Image i of the request uses seed + i.")
    subseed: int | None = Field(default=-1, description="Variation seed; ignored while subseed_strength is 0.")
    subseed_strength: float | None = Field(default=0, description=_UNSUPPORTED + " (variation seeds)")
    seed_resize_from_h: int | None = Field(default=-1, description=_UNSUPPORTED + " (-1 or 0)")
    seed_resize_from_w: int | None = Field(default=-1, description=_UNSUPPORTED + " (-1 or 0)")
    sampler_name: str | None = Field(
        default=None,
        description="A1111 sampler name or alias (see GET /sdapi/v1/samplers), e.g. 'DPM++ 2M Karras'. "
                    "Omitted: the model's default sampler.",
    )
    scheduler: str | None = Field(
        default=None,
        description="A1111 1.9+ schedule type: 'Automatic', 'Uniform', 'Karras' or 'Exponential' "
                    "(see GET /sdapi/v1/schedulers).",
    )
    batch_size: int | None = Field(default=1, ge=1, description="Images per batch.")
    n_iter: int | None = Field(default=1, ge=1, description="Number of batches. batch_size × n_iter images in all.")
    steps: int | None = Field(default=None, description="Sampling steps. Omitted: the model's default.")
    cfg_scale: float | None = Field(default=None, description="Classifier-free guidance. Omitted: the model's default.")
    width: int | None = Field(default=None, description="Multiple of 8. Omitted: the model's default.")
    height: int | None = Field(default=None, description="Multiple of 8. Omitted: the model's default.")
    restore_faces: bool | None = Field(default=None, description=_UNSUPPORTED + " (false)")
    tiling: bool | None = Field(default=None, description=_UNSUPPORTED + " (false)")
    do_not_save_samples: bool | None = Field(default=False, description=_IGNORED)
    do_not_save_grid: bool | None = Field(default=False, description=_IGNORED)
    eta: float | None = Field(default=None, description=_IGNORED + " Samplers run with A1111's default eta.")
    denoising_strength: float | None = Field(default=None, description="With enable_hr: the second pass's strength "
                                                                      "(default 0.7).")
    s_min_uncond: float | None = Field(default=None, description=_IGNORED)
    s_churn: float | None = Field(default=None, description=_IGNORED)
    s_tmax: float | None = Field(default=None, description=_IGNORED)
    s_tmin: float | None = Field(default=None, description=_IGNORED)
    s_noise: float | None = Field(default=None, description=_IGNORED)
    override_settings: dict[str, Any] | None = Field(
        default=None,
        description="Per-request settings. Honoured: 'sd_model_checkpoint' (model name, title or file name), "
                    "'samples_format' (png, jpg, webp), 'show_progress_every_n_steps' (live preview period, "
                    "default 10; 0 or -1: none) and 'live_previews_enable' (default true). Accepted at their "
                    "defaults only: 'sd_vae' (Automatic), "
                    "'eta_noise_seed_delta' (0), 'sdxl_clip_l_skip' (false). 'CLIP_stop_at_last_layers' is "
                    "accepted and, as in A1111, has no effect on SDXL models. Other keys are ignored.",
    )
    override_settings_restore_afterwards: bool | None = Field(
        default=True, description=_IGNORED + " Settings never outlive a request here."
    )
    refiner_checkpoint: str | None = Field(default=None, description=_UNSUPPORTED + " (none)")
    refiner_switch_at: float | None = Field(default=None, description=_IGNORED)
    disable_extra_networks: bool | None = Field(default=False, description=_IGNORED)
    firstpass_image: str | None = Field(default=None, description=_UNSUPPORTED + " (none)")
    comments: dict[str, Any] | None = Field(default=None, description=_IGNORED)
    enable_hr: bool | None = Field(default=False, description="Hires. fix: make the image at width × height, "
                                                              "enlarge it by hr_scale, refine it.")
    firstphase_width: int | None = Field(default=0, description=_IGNORED)
    firstphase_height: int | None = Field(default=0, description=_IGNORED)
    hr_scale: float | None = Field(default=2.0, description="With enable_hr: 1 < scale ≤ 4.")
    hr_upscaler: str | None = Field(default=None, description="With enable_hr: a latent upscaler ('Latent', "
                                                             "'Latent (bicubic)', …); others are refused.")
    hr_second_pass_steps: int | None = Field(default=0, description="With enable_hr: 0 = as many as steps.")
    hr_resize_x: int | None = Field(default=0, description="Refused unless 0: use hr_scale.")
    hr_resize_y: int | None = Field(default=0, description="Refused unless 0: use hr_scale.")
    hr_checkpoint_name: str | None = Field(default=None, description=_IGNORED + " (hires. fix)")
    hr_sampler_name: str | None = Field(default=None, description=_IGNORED + " (hires. fix)")
    hr_scheduler: str | None = Field(default=None, description=_IGNORED + " (hires. fix)")
    hr_prompt: str | None = Field(default="", description=_IGNORED + " (hires. fix)")
    hr_negative_prompt: str | None = Field(default="", description=_IGNORED + " (hires. fix)")
    force_task_id: str | None = Field(default=None, description=_IGNORED)
    sampler_index: str | None = Field(default=None, description="Deprecated A1111 alias of sampler_name, used "
                                                                 "only when sampler_name is empty.")
    script_name: str | None = Field(default=None, description=_UNSUPPORTED + " (none): no scripts here.")
    script_args: list[Any] | None = Field(default=None, description=_IGNORED)
    send_images: bool | None = Field(default=True, description="false: 'images' comes back empty.")
    save_images: bool | None = Field(
        default=False,
        description=_IGNORED + " Every image is stored anyway: its id is in info's 'image_ids', "
                               "and GET /v1/images/{id} returns it.",
    )
    alwayson_scripts: dict[str, Any] | None = Field(
        default=None, description="Only disabled entries are accepted (args empty, or first arg false)."
    )
    infotext: str | None = Field(default=None, description=_UNSUPPORTED + " (none)")


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(default=None, description="The images, base64-encoded (PNG by default).")
    parameters: dict[str, Any] = Field(description="The request's fields as received.")
    info: str = Field(description="A JSON string: seeds, prompts, sampler, size, model and per-image infotexts.")


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str = Field(description="What to put in override_settings.sd_model_checkpoint.")
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = Field(default=False, description="Cancellation has been requested.")
    stopping_generation: bool = False
    job: str = Field(default="", description="The generation's id ('' when idle).")
    job_count: int = Field(default=0, description="Your generations now queued or running.")
    job_timestamp: str = Field(default="0", description="When the generation was created, as YYYYMMDDhhmmss (UTC).")
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float = Field(description="The progress with a range of 0 to 1.")
    eta_relative: float = Field(description="Estimated seconds left (0 until the first step is done).")
    state: ProgressState
    current_image: str | None = Field(
        default=None,
        description="The running generation's newest live preview: a small JPEG, base64-encoded without a "
                    "data: prefix (as A1111 sends it). Null while queued, before the first preview, for "
                    "generations without previews, or with skip_current_image.",
    )
    textinfo: str | None = None


class Options(BaseModel):
    """The settings that apply to every request; change them per request with ``override_settings``."""

    model_config = ConfigDict(protected_namespaces=())

    sd_model_checkpoint: str = Field(description="The default model's title.")
    samples_format: str = "png"
    CLIP_stop_at_last_layers: int = 1
    sd_vae: str = "Automatic"
    eta_noise_seed_delta: int = 0


class LoraItem(BaseModel):
    """One entry of A1111's ``GET /sdapi/v1/loras``."""

    name: str = Field(description="What `<lora:name:weight>` in a prompt names.")
    alias: str
    path: str = Field(description="The file's name (not its location on the server).")
    metadata: dict[str, Any] = Field(description="family, default_weight, trigger_words, license")


class PNGInfoRequest(RequestModel):
    model_config = ConfigDict(extra="ignore")

    image: str = Field(min_length=1, description="The image, base64 or a data: URL (PNG, JPEG or WebP).")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="The generation parameters as written in the image (A1111 infotext); "
                                  "empty when it carries none.")
    items: dict[str, str] = Field(description="The image's other text items (PNG text chunks, XMP).")
    parameters: dict[str, str] = Field(description="`info` parsed: Prompt, Negative prompt, Steps, Sampler, …")


class StableDiffusionProcessingImg2Img(StableDiffusionProcessingTxt2Img):
    """Body of ``POST /sdapi/v1/img2img`` (A1111's ``StableDiffusionImg2ImgProcessingAPI``)."""

    init_images: list[str] | None = Field(default=None, description="The image to start from (base64 or a data: URL; "
                                                                    "exactly one).")
    mask: str | None = Field(default=None, description="Inpainting mask (base64), the size of the init image; white "
                                                       "= repaint.")
    denoising_strength: float | None = Field(default=0.75, description="0 < strength ≤ 1: how far from the init "
                                                                      "image to go.")
    resize_mode: int | None = Field(default=0, description="0 just resize, 1 crop and resize, 2 resize and fill, "
                                                           "3 just resize (latent upscale: as 0 here).")
    mask_blur: int | None = Field(default=None, description="Mask feathering in pixels (A1111's default 4).")
    mask_blur_x: int | None = Field(default=4, description="A1111's horizontal mask blur; mask_blur wins if set.")
    mask_blur_y: int | None = Field(default=4, description="A1111's vertical mask blur (the larger of x and y "
                                                           "applies).")
    inpainting_fill: int | None = Field(default=0, description="Masked content: 0 fill, 1 original, 2 latent noise, "
                                                               "3 latent nothing.")
    inpaint_full_res: bool | None = Field(default=False, description="Inpaint only the masked area, at full "
                                                                     "resolution, and scale it back into place.")
    inpaint_full_res_padding: int | None = Field(default=0, description="Context around the masked area, in pixels, "
                                                                        "with inpaint_full_res.")
    inpainting_mask_invert: int | None = Field(default=0, description="1: repaint the black part instead.")
    include_init_images: bool | None = Field(default=False, description="Accepted and ignored.")
