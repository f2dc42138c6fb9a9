"""The optional output classifier: scores generated images before they are delivered.

Interface: anything with ``score(images) -> list[float]`` (one score in [0, 1] per image,
higher = more likely to need a human look) is an :class:`ImageClassifier`. The worker
withholds an image whose score is above its account's ``review_threshold``.

:func:`load_classifier` loads an operator's model from a local file, never the network:

* ``.pt2`` — a ``torch.export`` program (``torch.export.save``), exported with a dynamic
  batch dimension;
* ``.pt`` / ``.ts`` / ``.torchscript`` / ``.jit`` — a TorchScript module (``torch.jit.save``).

Either takes a float32 tensor ``[N, 3, S, S]`` (RGB, values in [0, 1], ``S`` =
``PONYSERVE_MODERATION_CLASSIFIER_INPUT_SIZE``) and returns ``N`` scores (shape ``[N]`` or
``[N, 1]``). Scores are clamped into [0, 1]; a model that returns anything else is refused
at the first call rather than silently trusted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = ["ClassifierError", "ImageClassifier", "TorchImageClassifier", "load_classifier"]

_TORCHSCRIPT_SUFFIXES = frozenset({".pt", ".ts", ".torchscript", ".jit"})
_EXPORT_SUFFIXES = frozenset({".pt2"})


class ClassifierError(RuntimeError):
    """The classifier file cannot be loaded, or the model broke its contract."""


@runtime_checkable
class ImageClassifier(Protocol):
    def score(self, images: Sequence[Image.Image]) -> list[float]:
        """One score in [0, 1] per image, in order."""
        ...


class TorchImageClassifier:
    """A torch module behind the :class:`ImageClassifier` interface; thread-safe, inference only."""

    def __init__(self, module: Callable[..., Any], *, input_size: int = 224, device: str = "cpu",
                 source: str = "") -> None:
        self._module = module
        self.input_size = input_size
        self.device = device
        self.source = source
        # One call at a time: TorchScript modules are not guaranteed reentrant, and the
        # worker calls from a thread pool.
        self._lock = threading.Lock()

    def _tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import numpy as np
        import torch

        size = (self.input_size, self.input_size)
        arrays = [np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
                  for img in images]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).div_(255.0)
        return batch.to(self.device)

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        import torch

        if not images:
            return []
        batch = self._tensor(images)
        with self._lock, torch.inference_mode():
            out = self._module(batch)
        if not isinstance(out, torch.Tensor):
            raise ClassifierError(f"classifier {self.source} returned {type(out).__name__}, not a tensor")
        scores = out.detach().float().reshape(-1).cpu()
        if scores.numel() != len(images):
            raise ClassifierError(
                f"classifier {self.source} returned {scores.numel()} scores for {len(images)} images"
            )
        if not bool(torch.isfinite(scores).all()):
            raise ClassifierError(f"classifier {self.source} returned a non-finite score")
        return [float(s) for s in scores.clamp(0.0, 1.0).tolist()]


def load_classifier(path: Path | str, *, input_size: int = 224, device: str = "cpu") -> ImageClassifier:
    """Loads the classifier at ``path`` (see the module docstring for the formats) and checks
    that it answers one score per image on a two-image batch."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"moderation classifier not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in _EXPORT_SUFFIXES:
            module: Callable[..., Any] = torch.export.load(str(path)).module().to(device)
        elif suffix in _TORCHSCRIPT_SUFFIXES:
            scripted = torch.jit.load(str(path), map_location=device)
            scripted.eval()
            module = scripted
        else:
            raise ClassifierError(
                f"moderation classifier {path}: unknown format {suffix!r} (use .pt2 from torch.export, "
                "or .pt/.ts from torch.jit.save)"
            )
    except ClassifierError:
        raise
    except Exception as exc:
        raise ClassifierError(f"moderation classifier {path} could not be loaded: {exc}") from exc
    classifier = TorchImageClassifier(module, input_size=input_size, device=device, source=str(path))
    probe = [Image.new("RGB", (input_size, input_size)), Image.new("RGB", (input_size, input_size), "white")]
    try:
        classifier.score(probe)
    except ClassifierError:
        raise
    except Exception as exc:
        raise ClassifierError(f"moderation classifier {path} failed on a test batch: {exc}") from exc
    return classifier
