"""Fixtures for the runtime tests: one tiny demo model per test session, loaded on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import flow_spec

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


@pytest.fixture(scope="session")
def runtime_family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runtime-family-models")
    dirs = {}
    for family in ("sd3", "auraflow"):
        write_demo_model(root / family, seed=0, family=family)
        dirs[family] = root / family
    return dirs


@pytest.fixture(scope="session")
def runtime_family_models(runtime_family_dirs: dict[str, Path]) -> dict[str, LoadedModel]:
    return {
        family: load_model(flow_spec(f"demo-{family}", family, path), "cpu")
        for family, path in runtime_family_dirs.items()
    }


@pytest.fixture(params=["sd3", "auraflow"])
def flow_model(request: pytest.FixtureRequest, runtime_family_models: dict[str, LoadedModel]) -> LoadedModel:
    """Each flow-matching family's tiny demo model in turn."""
    return runtime_family_models[request.param]
