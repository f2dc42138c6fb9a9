"""Speed on the accelerator: memory format, attention kernels, torch.compile with batch-size buckets.

A compiled denoiser is specialised to the shapes it has seen; a new batch size
means a recompile that can take a minute. Calls are therefore padded up to one
of a few bucket sizes, each compiled and warmed at start-up, so a request never
waits on the compiler.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from app.runtime.families import FamilyAdapter

logger = logging.getLogger(__name__)

T = TypeVar("T")


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``n`` images; ``n`` itself when it exceeds every bucket.

    A call larger than the largest bucket runs unpadded (and compiles its own
    graph once); keep the worker's batch limit within the buckets to avoid that.
    """
    if n < 1:
        raise ValueError(f"a call has at least one image, got {n}")
    fitting = [b for b in buckets if b >= n]
    return min(fitting) if fitting else n


def pad_to_bucket(items: Sequence[T], buckets: Sequence[int]) -> list[T]:
    """``items`` followed by copies of its last element up to ``bucket_for(len(items))``."""
    size = bucket_for(len(items), buckets)
    return [*items, *([items[-1]] * (size - len(items)))]


def is_cuda(device: str) -> bool:
    return device.split(":", 1)[0] == "cuda"


def channels_last_modules(pipe: Any, adapter: FamilyAdapter) -> list[Any]:
    """The convolutional modules that run faster in NHWC on CUDA: the UNet (SDXL) and every VAE."""
    modules = [pipe.vae]
    if adapter.denoiser_attr == "unet":
        modules.append(pipe.unet)
    return modules


def optimize_for_device(pipe: Any, adapter: FamilyAdapter, device: str) -> None:
    """Layout changes that pay off on CUDA; nothing on CPU, where NCHW kernels are the tuned ones.

    Attention is left to diffusers' default processors, which call PyTorch's
    scaled_dot_product_attention (flash / memory-efficient kernels on CUDA);
    ``attention_processor_names`` lets tests and benchmarks verify that.
    """
    import torch

    if not is_cuda(device):
        return
    for module in channels_last_modules(pipe, adapter):
        module.to(memory_format=torch.channels_last)


def attention_processor_names(pipe: Any, adapter: FamilyAdapter) -> set[str]:
    """Class names of the denoiser's and VAE's attention processors (all "...2_0" means SDPA)."""
    names: set[str] = set()
    for module in (getattr(pipe, adapter.denoiser_attr), pipe.vae):
        names.update(type(processor).__name__ for processor in module.attn_processors.values())
    return names


def compile_denoiser(pipe: Any, adapter: FamilyAdapter, *, mode: str, expected_graphs: int) -> None:
    """Compile the UNet/transformer in place (``nn.Module.compile``), static shapes.

    ``expected_graphs`` is how many shape combinations warm-up will compile;
    dynamo's recompile limit is raised to cover them, since past it dynamo
    silently falls back to eager for new shapes.
    """
    import torch
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    # 1x1 convolutions as matmuls: the UNet has many, and cuBLAS beats cuDNN on them.
    inductor_config.conv_1x1_as_mm = True
    limit = max(int(dynamo_config.recompile_limit), expected_graphs + 8)
    dynamo_config.recompile_limit = limit
    denoiser = getattr(pipe, adapter.denoiser_attr)
    denoiser.compile(mode=mode, dynamic=False)
    logger.info(
        "denoiser compiled",
        extra={"module": type(denoiser).__name__, "mode": mode, "recompile_limit": limit, "torch": torch.__version__},
    )
