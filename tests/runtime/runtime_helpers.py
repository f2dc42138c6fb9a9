"""Helpers shared by the runtime tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from app.config import ModelSpec


def flow_spec(name: str, family: str, path: Path, **overrides: object) -> ModelSpec:
    """A spec for a tiny flow-matching demo model, sized for fast CPU tests."""
    fields: dict[str, object] = {
        "name": name,
        "family": family,
        "path": path,
        "defaults": {"width": 64, "height": 64, "steps": 2},
        "min_width": 64,
        "min_height": 64,
        "max_width": 1024,
        "max_height": 1024,
        **overrides,
    }
    return ModelSpec.model_validate(fields)
