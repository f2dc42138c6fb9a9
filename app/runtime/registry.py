"""The models one worker serves on its device: loaded on first use, kept within a memory budget.

Without a budget every model, once loaded, stays. With one, loading a model
that would not fit first evicts the least recently used models that no batch
is using; a model pinned by ``use`` is never evicted.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from app.config import ModelSpec
from app.runtime.acceleration import is_cuda
from app.runtime.memory import estimate_model_bytes
from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.types import RuntimeModelError

Loader = Callable[[ModelSpec, str], LoadedModel]
# Bytes a model will take on the device once loaded, known before loading it.
Sizer = Callable[[ModelSpec, str], int]

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    model: LoadedModel
    bytes: int
    pins: int = 0


class ModelRegistry:
    """Configured models for one device; ``get`` loads a model once, however many threads ask.

    A failed load is not remembered: the next ``get`` tries again, so a model
    whose file appears later (a volume mounted late) becomes servable.

    ``memory_budget_bytes`` caps the weights resident at once. Before a load,
    the new model's size is estimated from its files (``sizer``) and least
    recently used models are evicted until it fits; models pinned by ``use``
    stay, and a load that cannot fit waits up to ``load_wait_seconds`` for a
    pin to be released before failing with ``RuntimeModelError``. A model
    larger than the whole budget fails at once. An evicted model's memory is
    freed once nobody holds a reference to it: hold models through ``use``.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        device: str,
        *,
        loader: Loader = load_model,
        memory_budget_bytes: int | None = None,
        sizer: Sizer = estimate_model_bytes,
        load_wait_seconds: float = 300.0,
    ) -> None:
        names = [spec.name for spec in specs]
        dupes = sorted({name for name in names if names.count(name) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        self.device = device
        self.memory_budget_bytes = memory_budget_bytes
        self.load_wait_seconds = load_wait_seconds
        self._specs = {spec.name: spec for spec in specs}
        self._loader = loader
        self._sizer = sizer
        # One lock per model: loading a large model must not block a request
        # for another one that is already loaded or loading in parallel.
        self._load_locks = {name: threading.Lock() for name in self._specs}
        # Guards the bookkeeping below; never held while a model loads.
        self._state = threading.Condition()
        # Least recently used first.
        self._loaded: OrderedDict[str, _Entry] = OrderedDict()
        # Bytes set aside for loads in progress, so two parallel loads cannot both fit.
        self._reserved = 0
        self.evictions = 0

    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}") from None

    def is_loaded(self, name: str) -> bool:
        with self._state:
            return name in self._loaded

    def loaded_names(self) -> list[str]:
        """Models resident now, in configuration order (what a worker heartbeat reports)."""
        with self._state:
            return [name for name in self._specs if name in self._loaded]

    def memory_used_bytes(self) -> int:
        """Bytes of the resident models' weights."""
        with self._state:
            return sum(entry.bytes for entry in self._loaded.values())

    def get(self, name: str) -> LoadedModel:
        """The loaded model; raises ``KeyError`` if not configured, ``RuntimeModelError`` if unloadable.

        The model is not pinned: under a memory budget a later load may evict
        it. A batch should run inside ``use`` instead.
        """
        return self._obtain(name, pin=False)

    @contextmanager
    def use(self, name: str) -> Iterator[LoadedModel]:
        """The loaded model, pinned (never evicted) until the block exits."""
        model = self._obtain(name, pin=True)
        try:
            yield model
        finally:
            with self._state:
                entry = self._loaded.get(name)
                if entry is not None and entry.model is model:
                    entry.pins -= 1
                self._state.notify_all()

    def preload(self, names: Iterable[str] | None = None) -> None:
        """Load ``names`` (all configured models when None) now rather than on first request."""
        for name in self.names() if names is None else names:
            self.get(name)

    def unload(self, name: str) -> bool:
        """Drop ``name`` from the device if it is loaded and not in use; True if it was dropped."""
        self.spec(name)
        with self._state:
            entry = self._loaded.get(name)
            if entry is None or entry.pins:
                return False
            self._evict(name)
            self._state.notify_all()
        self._free_device_memory()
        return True

    # -- internals ---------------------------------------------------------------------

    def _take(self, name: str, pin: bool) -> LoadedModel | None:
        """The resident model, marked most recently used (and pinned); caller holds ``_state``."""
        entry = self._loaded.get(name)
        if entry is None:
            return None
        self._loaded.move_to_end(name)
        if pin:
            entry.pins += 1
        return entry.model

    def _obtain(self, name: str, *, pin: bool) -> LoadedModel:
        spec = self.spec(name)
        with self._state:
            model = self._take(name, pin)
        if model is not None:
            return model
        with self._load_locks[name]:
            with self._state:
                model = self._take(name, pin)
            if model is not None:
                return model
            reserved = self._make_room(spec)
            try:
                model = self._loader(spec, self.device)
            except BaseException:
                with self._state:
                    self._reserved -= reserved
                    self._state.notify_all()
                raise
            with self._state:
                self._reserved -= reserved
                self._loaded[name] = _Entry(
                    model=model, bytes=int(getattr(model, "memory_bytes", 0)), pins=1 if pin else 0
                )
                # The estimate can fall short of what actually loaded (unreadable headers count 0).
                evicted = self._evict_over_budget(keep=name)
                self._state.notify_all()
            if evicted:
                self._report_evictions(evicted, spec.name)
            return model

    def _make_room(self, spec: ModelSpec) -> int:
        """Evict until ``spec`` fits the budget and reserve its bytes; returns what was reserved."""
        budget = self.memory_budget_bytes
        if budget is None:
            return 0
        needed = self._sizer(spec, self.device)
        if needed > budget:
            raise RuntimeModelError(
                f"model {spec.name!r} needs about {needed} bytes, more than the device budget of {budget}"
            )
        deadline = time.monotonic() + self.load_wait_seconds
        evicted: list[str] = []
        try:
            with self._state:
                while True:
                    used = self._used() + self._reserved
                    if used + needed <= budget:
                        self._reserved += needed
                        return needed
                    victim = self._least_recently_used_idle()
                    if victim is not None:
                        self._evict(victim)
                        evicted.append(victim)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RuntimeModelError(
                            f"model {spec.name!r} needs about {needed} bytes, but the models in use leave only "
                            f"{max(budget - used, 0)} of the device budget of {budget} free"
                        )
                    self._state.wait(remaining)
        finally:
            if evicted:
                self._report_evictions(evicted, spec.name)

    def _used(self) -> int:
        return sum(entry.bytes for entry in self._loaded.values())

    def _least_recently_used_idle(self, keep: str | None = None) -> str | None:
        return next((n for n, entry in self._loaded.items() if entry.pins == 0 and n != keep), None)

    def _evict(self, name: str) -> None:
        del self._loaded[name]
        self.evictions += 1

    def _evict_over_budget(self, keep: str) -> list[str]:
        evicted: list[str] = []
        budget = self.memory_budget_bytes
        if budget is None:
            return evicted
        while self._used() + self._reserved > budget:
            victim = self._least_recently_used_idle(keep=keep)
            if victim is None:
                break
            self._evict(victim)
            evicted.append(victim)
        return evicted

    def _report_evictions(self, evicted: list[str], for_model: str) -> None:
        logger.info("models evicted", extra={"models": evicted, "for_model": for_model, "device": self.device})
        self._free_device_memory()

    def _free_device_memory(self) -> None:
        # Weights leave the device only once unreferenced; collect now rather than at the
        # next GC cycle, and hand the freed blocks back so the next load can use them.
        gc.collect()
        if is_cuda(self.device):
            import torch

            torch.cuda.empty_cache()
