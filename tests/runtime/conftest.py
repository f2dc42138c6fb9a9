"""Fixtures for the runtime tests: one tiny demo model per test session, loaded on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ModelSpec, demo_model_spec
from app.runtime.demo_model import write_demo_model
from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.single_file import export_single_file


@pytest.fixture(scope="session")
def runtime_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime-models") / "demo"
    write_demo_model(path, seed=0)
    return path


@pytest.fixture(scope="session")
def runtime_demo_spec(runtime_demo_dir: Path) -> ModelSpec:
    return demo_model_spec(runtime_demo_dir)


@pytest.fixture(scope="session")
def runtime_model(runtime_demo_spec: ModelSpec) -> LoadedModel:
    return load_model(runtime_demo_spec, "cpu")


@pytest.fixture(scope="session")
def runtime_demo_checkpoint(runtime_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as one .safetensors file in the original SDXL key layout."""
    path = tmp_path_factory.mktemp("runtime-checkpoints") / "demo.safetensors"
    export_single_file(runtime_model.pipeline, path)
    return path
