"""An img2img job's inputs on the worker: read from the image store and fitted to the output size.

The fitting follows A1111's ``resize_mode`` (resize, crop and resize, resize and fill) and its
inpainting options (mask blur, invert, what the masked area starts from), so an A1111 client's
request means the same here.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from app.generation.uploads import ALLOWED_FORMATS, MAX_UPLOAD_PIXELS
from app.queue.models import Job
from app.runtime.types import RuntimeModelError
from app.storage.base import ImageStore


def _open(store: ImageStore, key: str) -> Image.Image:
    try:
        data = store.get(key)
    except FileNotFoundError as exc:
        raise RuntimeModelError(f"the job's input image {key!r} is no longer stored") from exc
    with Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS)) as image:
        # The API checked it; a second guard before decoding costs nothing.
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            raise RuntimeModelError(f"the job's input image {key!r} is larger than uploads may be")
        image.load()
        return ImageOps.exif_transpose(image)


def fit(image: Image.Image, width: int, height: int, mode: str, *, resample: Image.Resampling) -> Image.Image:
    """``image`` at width×height: stretched (resize), filling the frame and cropped (crop), or fitted inside
    with its edges extended into the bars (fill)."""
    if mode == "crop":
        return ImageOps.fit(image, (width, height), method=resample)
    if mode == "fill":
        inner = ImageOps.contain(image, (width, height), method=resample)
        canvas = image.resize((width, height), resample).filter(ImageFilter.GaussianBlur(max(width, height) / 16))
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    return image.resize((width, height), resample)


def _start_masked_area(init: Image.Image, mask: Image.Image, fill: str, seed: int) -> Image.Image:
    """What the masked area starts from (A1111's inpainting_fill): original, fill, latent noise, latent nothing."""
    if fill == "original":
        return init
    if fill == "fill":
        base = init.filter(ImageFilter.GaussianBlur(max(init.size) / 8))
    elif fill == "noise":
        rng = random.Random(seed)
        base = Image.frombytes("RGB", init.size, rng.randbytes(init.width * init.height * 3))
    else:
        base = Image.new("RGB", init.size, (127, 127, 127))
    return Image.composite(base, init, mask)


@dataclass(frozen=True)
class Prepared:
    """What the pipeline gets for one img2img job (``init``, ``mask``, both at the job's size), and, when only
    the masked area is inpainted at full resolution, where its result goes back."""

    init: Image.Image
    mask: Image.Image | None
    region: tuple[int, int, int, int] | None = None
    whole: Image.Image | None = None
    whole_mask: Image.Image | None = None

    def finish(self, out: Image.Image) -> Image.Image:
        """The job's image from the pipeline's: the inpainted crop scaled back into the whole picture."""
        if self.region is None or self.whole is None or self.whole_mask is None:
            return out
        left, top, right, bottom = self.region
        patch = out.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS)
        result = self.whole.copy()
        result.paste(patch, (left, top), self.whole_mask.crop(self.region))
        return result


def _region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A1111's "only masked" crop: the mask's bounding box, padded, widened to the output's aspect ratio."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    left, top, right, bottom = box[0] - padding, box[1] - padding, box[2] + padding, box[3] + padding
    w, h = right - left, bottom - top
    if w / h < width / height:  # too narrow: widen around the centre
        grow = round(h * width / height) - w
        left, right = left - grow // 2, right + grow - grow // 2
    else:
        grow = round(w * height / width) - h
        top, bottom = top - grow // 2, bottom + grow - grow // 2
    # Shifted (not cut) back inside the picture where it can be; clamped where it cannot.
    dx = max(0, -left) - max(0, right - width)
    dy = max(0, -top) - max(0, bottom - height)
    left, right, top, bottom = left + dx, right + dx, top + dy, bottom + dy
    return max(0, left), max(0, top), min(width, right), min(height, bottom)


def load(job: Job, store: ImageStore) -> Prepared:
    """The job's init image (RGB) and mask (L, white = repaint), both at the job's size."""
    assert job.inputs is not None
    inputs = job.inputs
    mode = str(inputs.get("resize_mode") or "resize")
    init = fit(_open(store, str(inputs["init"])).convert("RGB"), job.width, job.height, mode,
               resample=Image.Resampling.LANCZOS)
    if not inputs.get("mask"):
        return Prepared(init, None)
    # Flattened on black before the grey conversion: a transparent area of a mask is "not painted", i.e. keep.
    raw = _open(store, str(inputs["mask"]))
    if raw.mode in ("RGBA", "LA", "P"):
        flat = Image.new("RGBA", raw.size, (0, 0, 0, 255))
        flat.alpha_composite(raw.convert("RGBA"))
        raw = flat
    mask = fit(raw.convert("L"), job.width, job.height, mode, resample=Image.Resampling.NEAREST)
    if inputs.get("mask_invert"):
        mask = ImageOps.invert(mask)
    blur = int(str(inputs.get("mask_blur") or 0))
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    init = _start_masked_area(init, mask, str(inputs.get("mask_fill") or "original"), job.seed)
    padding = inputs.get("full_res_padding")
    region = _region(mask, int(str(padding)), job.width, job.height) if padding is not None else None
    if region is None:
        return Prepared(init, mask)
    size = (job.width, job.height)
    return Prepared(init.crop(region).resize(size, Image.Resampling.LANCZOS),
                    mask.crop(region).resize(size, Image.Resampling.LANCZOS), region=region, whole=init,
                    whole_mask=mask)
