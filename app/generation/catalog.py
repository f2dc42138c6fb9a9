"""The models and LoRAs this deployment serves, as the API and the workers see them (specs only, no weights)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from app.config import LoraSpec, ModelSpec
from app.errors import InvalidRequest
from app.runtime.types import RuntimeModelError


class ModelCatalog:
    def __init__(self, specs: Sequence[ModelSpec], loras: LoraCatalog | None = None) -> None:
        if not specs:
            raise ValueError("no models configured")
        self._specs = {s.name: s for s in specs}
        self.default_name = specs[0].name
        self.loras = loras if loras is not None else LoraCatalog(list)

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def get(self, name: str | None) -> ModelSpec:
        """The named model, or the default one when the caller names none."""
        if name is None:
            return self._specs[self.default_name]
        spec = self._specs.get(name)
        if spec is None:
            raise InvalidRequest(
                f"Unknown model '{name}'. Available: {', '.join(self._specs)}.", code="model_not_found",
                param="model",
            )
        return spec


class LoraCatalog:
    """The LoRAs requests may name (specs only: files are opened by the workers).

    ``refresh`` re-reads them from where they came from (the models file), so an operator can add
    a LoRA without a restart (A1111's ``/sdapi/v1/refresh-loras``); readers see the old list or the
    new one, never half of each.
    """

    def __init__(self, load: Callable[[], Sequence[LoraSpec]]) -> None:
        self._load = load
        self._specs: dict[str, LoraSpec] = {}
        self.refresh()

    def refresh(self) -> None:
        self._specs = {spec.name: spec for spec in self._load()}

    def specs(self) -> list[LoraSpec]:
        return list(self._specs.values())

    def get(self, name: str) -> LoraSpec | None:
        return self._specs.get(name)

    def path_of(self, name: str) -> str:
        """The LoRA's file, re-reading the list once for a name it does not know (added since); raises
        ``RuntimeModelError`` for a name still unknown after that."""
        spec = self._specs.get(name)
        if spec is None:
            try:
                self.refresh()
            except Exception as exc:  # a models file being edited: the old list stands
                raise RuntimeModelError(f"LoRA {name!r} is not configured on this worker, and the LoRA list "
                                        f"could not be re-read: {exc}") from exc
            spec = self._specs.get(name)
        if spec is None:
            raise RuntimeModelError(f"LoRA {name!r} is not configured on this worker")
        return str(spec.path)
