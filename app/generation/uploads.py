"""Images callers send us (img2img and inpainting inputs, png-info), checked defensively.

An upload is attacker-controlled bytes handed to an image decoder, so the checks come in the
order that bounds the work: the encoded size before base64 decoding, the container format from
the header before any decoding, the declared pixel count before pixels are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from app.errors import InvalidRequest, PayloadTooLarge

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
# 4096 × 4096: larger than any model's output, far below a decompression bomb.
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 24 * 1024 * 1024
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Upload:
    data: bytes
    format: str
    width: int
    height: int


def decode_base64_image(value: str, *, param: str, max_bytes: int = MAX_UPLOAD_BYTES,
                        max_pixels: int = MAX_UPLOAD_PIXELS) -> Upload:
    """A base64 image (bare, or a ``data:image/…;base64,`` URL) checked to be a PNG, JPEG or WebP of at most
    ``max_pixels``; its bytes, undecoded. 400 (or 413) naming ``param`` otherwise."""
    text = _DATA_URL.sub("", value.strip(), count=1)
    if len(text) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"'{param}' is larger than {max_bytes // (1024 * 1024)} MiB.", param=param)
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{param}' is not base64.", code="invalid_image", param=param) from None
    return inspect_image(data, param=param, max_pixels=max_pixels)


def inspect_image(data: bytes, *, param: str, max_pixels: int = MAX_UPLOAD_PIXELS) -> Upload:
    """Checks encoded image bytes without decoding their pixels: format and declared size."""
    if not data:
        raise InvalidRequest(f"'{param}' is empty.", code="invalid_image", param=param)
    try:
        # open() reads the header only; formats= stops PIL from trying its other (less hardened) decoders.
        with Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS)) as image:
            fmt, (width, height) = str(image.format), image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise InvalidRequest(f"'{param}' is not a PNG, JPEG or WebP image.", code="invalid_image",
                             param=param) from None
    if width * height > max_pixels:
        raise InvalidRequest(f"'{param}' is {width}x{height}; at most {max_pixels:,} pixels are accepted.",
                             code="image_too_large", param=param)
    return Upload(data=data, format=fmt, width=width, height=height)
