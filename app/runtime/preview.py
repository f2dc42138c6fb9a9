"""Cheap live previews: latents projected straight to RGB, without the VAE.

A VAE decode per preview would cost about as much as a denoising step at full
resolution. A fixed linear map from the latent channels to RGB (the "latent RGB
factors" that ComfyUI and others fitted against each VAE) is nearly free and
recognisable enough to show composition and colour while the image forms. The
result has the latent's resolution (an eighth of the image per side).

The factors apply to latents as the denoiser sees them (scaled, and for SD3
shifted), which is what diffusers hands ``callback_on_step_end``. Mid-run those
latents still hold the sampler's remaining noise, so early previews look grainy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "PREVIEW_MAX_SIDE",
    "PREVIEW_MEDIA_TYPE",
    "PREVIEW_QUALITY",
    "LatentProjection",
    "encode_preview",
    "latents_to_previews",
    "projection_for",
]

# Longest side of a preview; latents of images up to 2048 px per side are not scaled down.
PREVIEW_MAX_SIDE = 256
# JPEG at this quality keeps a 128×128 preview at a few kilobytes, small enough for a progress row.
PREVIEW_QUALITY = 70
PREVIEW_MEDIA_TYPE = "image/jpeg"


@dataclass(frozen=True)
class LatentProjection:
    """``rgb = latent · factors + bias`` per pixel, in [-1, 1] like the VAE's output."""

    factors: tuple[tuple[float, float, float], ...]  # one (R, G, B) row per latent channel
    bias: tuple[float, float, float]


# The SDXL VAE's 4 channels: SDXL itself, and AuraFlow, which reuses that VAE.
SDXL_PROJECTION = LatentProjection(
    factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
)

# The SD3 VAE's 16 channels.
SD3_PROJECTION = LatentProjection(
    factors=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    bias=(0.2394, 0.2135, 0.1925),
)

_BY_CHANNELS = {4: SDXL_PROJECTION, 16: SD3_PROJECTION}


def projection_for(latent_channels: int) -> LatentProjection | None:
    """The projection for a VAE with this many latent channels (``vae.config.latent_channels``).

    Chosen by the VAE rather than the model family because the factors describe
    the VAE's latent space: AuraFlow, for one, runs on SDXL's. None when no
    factors are known, and then no previews are made.
    """
    return _BY_CHANNELS.get(latent_channels)


def latents_to_previews(
    latents: torch.Tensor, projection: LatentProjection, *, max_side: int = PREVIEW_MAX_SIDE
) -> list[Image.Image]:
    """One RGB preview per latent of a ``(batch, channels, height, width)`` tensor, on any device.

    The projection runs where the latents are, so only the small RGB result
    crosses to the host; previews larger than ``max_side`` are scaled down.
    """
    import torch
    from PIL import Image

    if latents.ndim != 4 or latents.shape[1] != len(projection.factors):
        raise ValueError(
            f"expected latents of shape (batch, {len(projection.factors)}, height, width), got {tuple(latents.shape)}"
        )
    weight = torch.tensor(projection.factors, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(projection.bias, dtype=torch.float32, device=latents.device).view(1, 3, 1, 1)
    rgb = torch.einsum("bchw,cr->brhw", latents.detach().float(), weight) + bias
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    previews = []
    for array in pixels:
        image = Image.fromarray(array, "RGB")
        if max(image.size) > max_side:
            # thumbnail keeps the aspect ratio and never enlarges.
            image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        previews.append(image)
    return previews


def encode_preview(image: Image.Image, *, quality: int = PREVIEW_QUALITY) -> bytes:
    """A preview as a small baseline JPEG (``PREVIEW_MEDIA_TYPE``), a few kilobytes."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
