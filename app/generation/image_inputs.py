"""img2img and inpainting inputs on the API side: checked, stored where every worker can read them, erased
with their job.

The API checks an upload (format, declared size, mask against image) without decoding its pixels,
stores the bytes as sent under ``inputs/…`` in the image store (a worker on another host reads
them from there, as the API reads the worker's outputs), and the job keeps their keys in
``jobs.inputs``. Fitting them to the output size happens in the worker (``app.worker.image_inputs``),
off the API's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from app.config import ModelSpec, Settings
from app.errors import InvalidRequest
from app.generation import image_fetch
from app.generation.schemas import GenerationRequest
from app.generation.uploads import Upload, decode_base64_image, inspect_image
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.queue.models import input_storage_keys
from app.storage.base import ImageStore

# Families whose diffusers pipelines have img2img and inpainting variants (AutoPipelineFor*.from_pipe).
FAMILIES_WITH_IMAGE_INPUTS = frozenset({"sdxl", "sd3"})
DEFAULT_STRENGTH = 0.75
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


@dataclass(frozen=True)
class CheckedInputs:
    init: Upload
    mask: Upload | None


async def check(req: GenerationRequest, spec: ModelSpec, urls: UrlPolicy) -> CheckedInputs | None:
    """The request's image inputs, checked; None for text-to-image. 400s name the field at fault."""
    if req.init_image is None:
        for name in ("mask", "strength"):
            if getattr(req, name) is not None:
                raise InvalidRequest(f"'{name}' needs an init_image.", code="missing_init_image", param=name)
        return None
    if spec.family not in FAMILIES_WITH_IMAGE_INPUTS:
        raise InvalidRequest(f"Model '{spec.name}' ({spec.family}) takes no init_image: diffusers has no img2img "
                             "pipeline for it.", code="img2img_not_supported", param="init_image")
    init = await _read(req.init_image, "init_image", urls)
    mask = await _read(req.mask, "mask", urls) if req.mask is not None else None
    if mask is not None and (mask.width, mask.height) != (init.width, init.height):
        raise InvalidRequest(f"The mask is {mask.width}x{mask.height}; init_image is {init.width}x{init.height}. "
                             "They must be the same size.", code="mask_size_mismatch", param="mask")
    return CheckedInputs(init=init, mask=mask)


@dataclass(frozen=True)
class UrlPolicy:
    """Whether image fields may be URLs, and how they are fetched (the operator's settings)."""

    enabled: bool = False
    allow_private: bool = False
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls(enabled=settings.image_url_inputs, allow_private=settings.image_url_allow_private,
                   timeout=settings.image_url_timeout_seconds)


async def _read(value: str, param: str, urls: UrlPolicy) -> Upload:
    if not image_fetch.is_url(value):
        # Base64 of up to 24 MiB: decoded off the event loop.
        return await asyncio.to_thread(decode_base64_image, value, param=param)
    if not urls.enabled:
        raise InvalidRequest(f"'{param}' is a URL; this deployment takes images inline only (base64 or a data: "
                             "URL).", code="image_urls_disabled", param=param)
    data = await image_fetch.fetch(value, param=param, allow_private=urls.allow_private, timeout=urls.timeout)
    return await asyncio.to_thread(inspect_image, data, param=param)


def with_output_size(req: GenerationRequest, inputs: CheckedInputs | None) -> GenerationRequest:
    """Without an explicit size, an img2img job is the size of its init image (down to a multiple of 8)."""
    if inputs is None or req.size not in (None, "auto") or req.width is not None or req.height is not None:
        return req
    return req.model_copy(update={"width": max(64, inputs.init.width // 8 * 8),
                                  "height": max(64, inputs.init.height // 8 * 8)})


def check_strength(req: GenerationRequest, steps: int) -> float | None:
    if req.init_image is None:
        return None
    strength = req.strength if req.strength is not None else DEFAULT_STRENGTH
    if int(steps * strength) < 1:
        raise InvalidRequest(f"strength {strength:g} of {steps} steps runs no denoising step; raise one of them.",
                             code="invalid_strength", param="strength")
    return strength


async def store(store_: ImageStore, inputs: CheckedInputs, req: GenerationRequest) -> dict[str, object]:
    """Writes the uploads to the image store; what the job keeps in ``jobs.inputs``."""
    folder = f"inputs/{utcnow():%Y/%m/%d}/{new_id('in')}"
    init_key = f"{folder}/init.{_EXTENSIONS[inputs.init.format]}"
    await asyncio.to_thread(store_.put, init_key, inputs.init.data)
    stored: dict[str, object] = {"init": init_key, "mask": None, "resize_mode": req.resize_mode}
    digest = hashlib.sha256(inputs.init.data)
    if inputs.mask is not None:
        mask_key = f"{folder}/mask.{_EXTENSIONS[inputs.mask.format]}"
        try:
            await asyncio.to_thread(store_.put, mask_key, inputs.mask.data)
        except BaseException:
            await asyncio.to_thread(store_.delete, init_key)
            raise
        digest.update(inputs.mask.data)
        stored.update(mask=mask_key, mask_blur=req.mask_blur, mask_invert=req.mask_invert, mask_fill=req.mask_fill,
                      full_res_padding=req.mask_padding)
    stored["digest"] = digest.hexdigest()[:16]
    return stored


async def discard(store_: ImageStore, stored: dict[str, object] | None) -> None:
    """Removes uploads of a request that was then refused: nothing of it stays behind."""
    for key in input_storage_keys(stored):
        await asyncio.to_thread(store_.delete, key)


def batch_key_part(stored: dict[str, object] | None, strength: float | None) -> str:
    """Jobs share a call only with the very same inputs: in practice, an img2img job runs on its own."""
    if not stored:
        return ""
    options = ",".join(f"{k}={stored.get(k)}" for k in ("resize_mode", "mask_blur", "mask_invert", "mask_fill",
                                                        "full_res_padding"))
    return "|img=" + hashlib.sha256(f"{stored['digest']}|{strength:g}|{options}".encode()).hexdigest()[:16]



def openai_edit_inputs(image: bytes, mask: bytes | None) -> tuple[str, str | None]:
    """OpenAI's ``images.edit`` inputs as ours: the image (base64) and a mask in our convention (white =
    repaint), made from OpenAI's (fully transparent = edit) — the mask file's alpha, else the image's own.
    None for the mask when neither has a transparent pixel: then the edit is plain img2img."""
    import base64
    import io

    from PIL import Image

    checked = inspect_image(image, param="image")
    source = inspect_image(mask, param="mask").data if mask is not None else checked.data
    with Image.open(io.BytesIO(source)) as picture:
        if mask is not None and picture.size != (checked.width, checked.height):
            raise InvalidRequest(f"The mask is {picture.width}x{picture.height}; the image is "
                                 f"{checked.width}x{checked.height}. They must be the same size.",
                                 code="mask_size_mismatch", param="mask")
        if "A" not in picture.getbands() and not (picture.mode == "P" and "transparency" in picture.info):
            if mask is not None:
                raise InvalidRequest("The mask has no alpha channel: its fully transparent pixels mark the area "
                                     "to edit.", code="invalid_mask", param="mask")
            return base64.b64encode(image).decode(), None
        alpha = picture.convert("RGBA").getchannel("A")
    ours = alpha.point(lambda a: 255 if a == 0 else 0)
    if ours.getbbox() is None:
        if mask is not None:
            raise InvalidRequest("The mask has no fully transparent pixel, so nothing would be edited.",
                                 code="invalid_mask", param="mask")
        return base64.b64encode(image).decode(), None
    buffer = io.BytesIO()
    ours.save(buffer, format="PNG")
    return base64.b64encode(image).decode(), base64.b64encode(buffer.getvalue()).decode()
