"""Bodies of the generation endpoints: OpenAI Images-compatible, plus ponyserve's extensions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.kit.request import RequestModel

OutputFormat = Literal["png", "jpeg", "webp"]
OutputStatus = Literal["delivered", "withheld", "removed"]
_STATUS_DOC = ("'delivered'; 'withheld' while the output classifier's flag awaits a moderator (no bytes or link "
               "until released); 'removed' once a moderator rejected it.")
MAX_SEED = 2**32 - 1
MAX_STEPS = 500
MAX_METADATA_PAIRS = 16
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
_METADATA_DOC = (f"Your own labels for this job: up to {MAX_METADATA_PAIRS} string pairs (keys 1–64 characters, "
                 "values up to 512). Returned on the job and in its webhooks. Not seen by the model.")


MAX_LORAS_PER_REQUEST = 16
# A base64 image field: app.generation.uploads' 24 MiB limit, in base64, with room for a data: URL prefix.
MAX_IMAGE_FIELD_CHARS = 33 * 1024 * 1024


class LoraRequest(RequestModel):
    """One LoRA to apply: a name from `GET /v1/loras` and its weight."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="A LoRA of `GET /v1/loras`.")
    weight: float | None = Field(default=None, ge=-4.0, le=4.0,
                                 description="Strength; the LoRA's default_weight if omitted. 0 = no effect.")
    text_encoder_weight: float | None = Field(
        default=None, ge=-4.0, le=4.0,
        description="Strength on the text encoders, when it should differ from `weight` (A1111's "
                    "`<lora:name:te:unet>`); `weight` if omitted.")


LatentUpscaler = Literal["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                         "Latent (nearest)", "Latent (nearest-exact)"]


class HiresRequest(RequestModel):
    """Hires. fix: generate at the requested size, upscale the latents, then refine at the larger size."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(gt=1.0, le=4.0, description="Output size = the requested size × scale (down to a "
                                                     "multiple of 8).")
    denoise: float = Field(default=0.5, gt=0.0, le=1.0, description="Strength of the second pass.")
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS,
                              description="Second-pass steps (int(steps × denoise) run); the first pass's if omitted.")
    upscaler: LatentUpscaler = Field(default="Latent", description="How latents are enlarged (A1111's latent "
                                                                   "upscalers).")


class GenerationRequest(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "a pony in a meadow, watercolor", "size": "512x512",
                                         "response_format": "b64_json", "seed": 42}]},
    )

    prompt: str = Field(min_length=1, max_length=4000, description="What to draw.")
    model: str | None = Field(default=None, max_length=64, description="Model name; the default model if omitted.")
    n: int = Field(default=1, ge=1, le=8, description="Number of images (seeds seed, seed+1, …).")
    size: str | None = Field(
        default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$",
        description="'WIDTHxHEIGHT' (multiples of 8) or 'auto' for the model's default.",
    )
    response_format: Literal["url", "b64_json"] = Field(
        default="url", description="'url': a signed link valid for an hour; 'b64_json': the bytes inline."
    )
    user: str | None = Field(default=None, max_length=200, description="Your end-user id, kept with the job.")
    quality: str | None = Field(default=None, max_length=32,
                                description="Accepted for OpenAI-client compatibility; does not change the result.")
    style: str | None = Field(default=None, max_length=32,
                              description="Accepted for OpenAI-client compatibility; does not change the result.")
    negative_prompt: str | None = Field(default=None, max_length=4000,
                                        description="What to avoid; the model's default negative prompt if omitted.")
    width: int | None = Field(default=None, ge=64, le=8192, description="Overrides size; a multiple of 8.")
    height: int | None = Field(default=None, ge=64, le=8192, description="Overrides size; a multiple of 8.")
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS, description="Denoising steps.")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0, description="Classifier-free guidance (CFG).")
    sampler: str | None = Field(default=None, max_length=40, description="A1111 sampler name, e.g. 'Euler a'.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Random if omitted; echoed per image.")
    clip_skip: int | None = Field(default=None, ge=1, le=12,
                                  description="A1111 convention: 1 = last CLIP layer, 2 = penultimate (SDXL default).")
    output_format: OutputFormat = Field(default="png", description="Image encoding.")
    preview_every: int | None = Field(
        default=None, ge=0, le=MAX_STEPS,
        description="Live previews: every this many denoising steps, a low-resolution preview of the job's first "
                    "image (a JPEG of about an eighth of the image's width and height, at most 256 px, drawn "
                    "straight from the latents, so grainy in early steps) is sent with the `progress` events of "
                    "`GET /v1/generations/{id}/events` and shown in `progress.preview` of "
                    "`GET /v1/generations/{id}`. 0 or omitted: no previews. At most `steps`. Free of charge.",
    )

    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=MAX_METADATA_PAIRS,
                                                              description=_METADATA_DOC)
    init_image: str | None = Field(
        default=None, min_length=1, max_length=MAX_IMAGE_FIELD_CHARS,
        description="img2img: the image to start from, base64 or a data: URL (PNG, JPEG or WebP, at most 4096×4096"
                    "). Without size/width/height the output takes its size (rounded down to a multiple of 8).")
    mask: str | None = Field(
        default=None, min_length=1, max_length=MAX_IMAGE_FIELD_CHARS,
        description="Inpainting: a mask the size of init_image; white = repaint, black = keep (kept pixels come back "
                    "unchanged).")
    strength: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="How far from init_image to go: 1 repaints entirely, low values stay close (default 0.75). "
                    "int(steps × strength) denoising steps run; at least one must.")
    resize_mode: Literal["resize", "crop", "fill"] = Field(
        default="resize", description="Fitting init_image (and mask) to the output size: 'resize' stretches, "
                                      "'crop' fills the frame and crops the overflow, 'fill' fits inside and extends "
                                      "the edges.")
    mask_blur: int = Field(default=0, ge=0, le=64, description="Feathers the mask's edge by this many pixels.")
    mask_invert: bool = Field(default=False, description="Repaint the black part of the mask instead.")
    mask_padding: int | None = Field(
        default=None, ge=0, le=1024,
        description="Inpaint only the masked area, at the full output resolution, with this many pixels of context "
                    "around it (A1111's inpaint_full_res and its padding); the result is scaled back into place. "
                    "Omitted: the whole picture is inpainted.")
    mask_fill: Literal["original", "fill", "noise", "blank"] = Field(
        default="original", description="What the masked area starts from: the original pixels, a blur of their "
                                        "surroundings, noise, or flat grey (A1111's inpainting_fill 1, 0, 2, 3).")
    hires: HiresRequest | None = Field(
        default=None, description="Hires. fix: the images are made at the requested size, then enlarged by "
                                  "`hires.scale` and refined; metered for both passes (see `usage`).")
    loras: list[LoraRequest] | None = Field(
        default=None, max_length=MAX_LORAS_PER_REQUEST,
        description="LoRAs to apply (names from `GET /v1/loras`, each once), up to your plan's `max_loras`. A LoRA "
                    "made for another model family is refused.")
    store: bool = Field(
        default=True,
        description="false: nothing is kept once the response is sent — images, prompts and the job are erased "
                    "(the usage record stays), no webhook is sent and the job cannot be fetched again. Only on "
                    "POST /v1/images/generations with response_format 'b64_json'.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class UsageBlock(BaseModel):
    images: int = Field(description="Images charged for this request.")
    megapixel_steps: float = Field(description="Sum over images of width×height/10⁶ × steps.")
    price_units: int = Field(description="Thousandths of a reference image (1024×1024, 30 steps).")
    gpu_seconds: float | None = Field(default=None, description="Accelerator time spent, when finished.")


class ImageData(BaseModel):
    """One image in the OpenAI Images response shape."""

    id: str
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str
    seed: int
    status: OutputStatus = Field(default="delivered", description=_STATUS_DOC)


class ImagesResponse(BaseModel):
    id: str
    created: int
    model: str
    data: list[ImageData]
    usage: UsageBlock


class Progress(BaseModel):
    step: int = Field(description="Denoising steps done.")
    total: int = Field(description="Denoising steps in all.")
    # Left out of the body when absent, so jobs without previews read exactly as before.
    preview: str | None = Field(
        default=None, exclude_if=lambda v: v is None,
        description="While the job runs, if it asked for `preview_every`: its newest preview as a "
                    "`data:image/jpeg;base64,…` URL. Absent otherwise.",
    )
    preview_step: int | None = Field(default=None, exclude_if=lambda v: v is None,
                                     description="The step `preview` shows. Absent with `preview`.")


class JobError(BaseModel):
    code: str
    message: str


class OutputOut(BaseModel):
    id: str
    url: str | None = Field(description="Signed link to the image; null while it is withheld or once removed.")
    seed: int
    width: int
    height: int
    format: OutputFormat
    revised_prompt: str
    status: OutputStatus = Field(default="delivered", description=_STATUS_DOC)


class LoraApplied(BaseModel):
    name: str
    weight: float
    text_encoder_weight: float


class JobParameters(BaseModel):
    prompt: str
    negative_prompt: str
    revised_prompt: str
    revised_negative_prompt: str
    model: str
    n: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str
    seed: int
    output_format: OutputFormat
    loras: list[LoraApplied] = Field(default_factory=list, description="The LoRAs applied, by name.")


class JobOut(BaseModel):
    id: str
    object: Literal["generation"] = "generation"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = Field(description="Jobs ahead of this one while queued, else null.")
    progress: Progress
    parameters: JobParameters
    outputs: list[OutputOut]
    usage: UsageBlock
    error: JobError | None
    metadata: dict[str, str] = Field(default_factory=dict, description="The labels the request carried.")


class GenerationList(BaseModel):
    """A page of jobs, newest first (OpenAI's list shape): pass ``last_id`` as ``after`` for the next."""

    object: Literal["list"] = "list"
    data: list[JobOut]
    first_id: str | None = Field(description="The first job of this page; null when it is empty.")
    last_id: str | None = Field(description="The last job of this page: the `after` of the next page.")
    has_more: bool = Field(description="Whether jobs older than `last_id` match too.")


class LoraOut(BaseModel):
    id: str = Field(description="The name requests use.")
    object: Literal["lora"] = "lora"
    family: str = Field(description="The model family it applies to (models of another family refuse it).")
    default_weight: float
    trigger_words: list[str] = Field(description="Words it was trained on: put them in the prompt to call it up.")
    license: str | None
    description: str


class LoraList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LoraOut]


class ModelDefaultsOut(BaseModel):
    steps: int
    guidance_scale: float
    sampler: str
    width: int
    height: int


class ModelLimitsOut(BaseModel):
    min_width: int
    max_width: int
    min_height: int
    max_height: int
    max_steps: int


class ModelLicenseOut(BaseModel):
    id: str
    name: str
    url: str | None
    monetization_allowed: bool
    monthly_image_cap: int | None = Field(description="Deployment-wide images per period; null = no cap")
    at_cap: str = Field(description="What happens at the cap: reject, fallback (to fallback_model) or allow_overage")
    fallback_model: str | None


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ponyserve"
    family: str
    description: str
    license: str | None
    license_terms: ModelLicenseOut | None
    defaults: ModelDefaultsOut
    limits: ModelLimitsOut
    samplers: list[str]
    prompt_prefix: str
    prompt_suffix: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]
