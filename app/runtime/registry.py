"""The models one worker serves, each loaded on first use and then kept."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from app.config import ModelSpec
from app.runtime.pipelines import LoadedModel, load_model

Loader = Callable[[ModelSpec, str], LoadedModel]


class ModelRegistry:
    """Configured models for one device; ``get`` loads a model once, however many threads ask.

    A failed load is not remembered: the next ``get`` tries again, so a model
    whose file appears later (a volume mounted late) becomes servable.
    """

    def __init__(self, specs: Sequence[ModelSpec], device: str, *, loader: Loader = load_model) -> None:
        names = [spec.name for spec in specs]
        dupes = sorted({name for name in names if names.count(name) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        self.device = device
        self._specs = {spec.name: spec for spec in specs}
        self._loader = loader
        # One lock per model: loading a large model must not block a request
        # for another one that is already loaded or loading in parallel.
        self._locks = {name: threading.Lock() for name in self._specs}
        self._loaded: dict[str, LoadedModel] = {}

    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}") from None

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def get(self, name: str) -> LoadedModel:
        """The loaded model; raises ``KeyError`` if not configured, ``RuntimeModelError`` if unloadable."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        spec = self.spec(name)
        with self._locks[name]:
            loaded = self._loaded.get(name)
            if loaded is None:
                loaded = self._loader(spec, self.device)
                self._loaded[name] = loaded
        return loaded

    def preload(self, names: Iterable[str] | None = None) -> None:
        """Load ``names`` (all configured models when None) now rather than on first request."""
        for name in self.names() if names is None else names:
            self.get(name)
