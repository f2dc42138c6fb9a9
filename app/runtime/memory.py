"""How much device memory a model's weights take, loaded or still on disk."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.config import ModelSpec

# Element sizes of safetensors dtypes.
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
# A header larger than this is not a safetensors header (the format caps it at 100 MB).
_MAX_HEADER_BYTES = 100_000_000
_TARGET_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def module_bytes(pipe: Any) -> int:
    """Bytes of every parameter and buffer of a pipeline's torch modules, each tensor counted once."""
    import torch

    seen: set[int] = set()
    total = 0
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in (*component.parameters(), *component.buffers()):
            key = tensor.data_ptr()
            if key in seen and key != 0:
                continue
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def safetensors_header(path: Path) -> dict[str, Any]:
    """A .safetensors file's header (tensor name -> dtype, shape, offsets), read without loading tensors."""
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise ValueError(f"{path} has an implausible safetensors header length {length}")
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path} has no safetensors header")
    header.pop("__metadata__", None)
    return header


def _component_folders(path: Path) -> list[Path]:
    """The folders ``from_pretrained`` loads: the components model_index.json names (not, say, a LoRA
    kept beside them); the whole folder when there is no index."""
    index = path / "model_index.json"
    try:
        entries = json.loads(index.read_text())
    except (OSError, ValueError):
        return [path]
    return [path / name for name, value in sorted(entries.items())
            if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None]


def _weight_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    files = (file for folder in _component_folders(path) for file in folder.rglob("*.safetensors"))
    for file in sorted(files):
        # "model.fp16.safetensors" and friends are variants that from_pretrained skips
        # unless asked; counting them would double the estimate of hub-style folders.
        if "." not in file.name.removesuffix(".safetensors"):
            yield file


def estimate_model_bytes(spec: ModelSpec, device: str) -> int:
    """Device bytes ``spec``'s weights will take once loaded in its dtype on ``device``.

    Read from the safetensors headers alone (no tensor is loaded), so the
    registry can make room before a load rather than after it. Floating-point
    tensors are counted at the model's dtype, others as stored. Returns 0 when
    the files cannot be read; the load itself then reports the problem.
    """
    from app.runtime.pipelines import resolve_dtype_name

    target = _TARGET_BYTES[resolve_dtype_name(spec.dtype, device)]
    total = 0
    sources = [spec.path] + ([spec.vae] if spec.vae is not None else [])
    try:
        for source in sources:
            for file in _weight_files(Path(source)):
                for info in safetensors_header(file).values():
                    count = 1
                    for dim in info["shape"]:
                        count *= int(dim)
                    dtype = info["dtype"]
                    total += count * (target if dtype in _FLOAT_DTYPES else _DTYPE_BYTES.get(dtype, 4))
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return total
