"""The models this deployment serves, as the API sees them (specs only, no weights)."""

from __future__ import annotations

from collections.abc import Sequence

from app.config import ModelSpec
from app.errors import InvalidRequest


class ModelCatalog:
    def __init__(self, specs: Sequence[ModelSpec]) -> None:
        if not specs:
            raise ValueError("no models configured")
        self._specs = {s.name: s for s in specs}
        self.default_name = specs[0].name

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
