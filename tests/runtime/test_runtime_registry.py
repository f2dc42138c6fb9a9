from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.config import ModelSpec
from app.runtime.pipelines import LoadedModel
from app.runtime.registry import ModelRegistry
from app.runtime.types import RuntimeModelError


def _spec(name: str, tmp_path: Path) -> ModelSpec:
    return ModelSpec(name=name, path=tmp_path / name, defaults={"width": 512, "height": 512})


class CountingLoader:
    """Stands in for load_model: slow, counts calls, can fail on demand."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or set()
        self._lock = threading.Lock()

    def __call__(self, spec: ModelSpec, device: str) -> LoadedModel:
        with self._lock:
            self.calls.append(spec.name)
        time.sleep(0.05)
        if spec.name in self.fail:
            raise RuntimeModelError(f"{spec.name} is broken")
        return LoadedModel.__new__(LoadedModel)


def test_names_and_specs(tmp_path: Path) -> None:
    specs = [_spec("a", tmp_path), _spec("b", tmp_path)]
    registry = ModelRegistry(specs, "cpu", loader=CountingLoader())
    assert registry.names() == ["a", "b"]
    assert registry.spec("b") is specs[1]
    with pytest.raises(KeyError):
        registry.spec("c")
    with pytest.raises(KeyError):
        registry.get("c")


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        ModelRegistry([_spec("a", tmp_path), _spec("a", tmp_path)], "cpu")


def test_concurrent_gets_load_once(tmp_path: Path) -> None:
    loader = CountingLoader()
    registry = ModelRegistry([_spec("a", tmp_path), _spec("b", tmp_path)], "cpu", loader=loader)
    results: list[LoadedModel] = []
    threads = [threading.Thread(target=lambda: results.append(registry.get("a"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.calls == ["a"]
    assert all(result is results[0] for result in results)
    assert registry.is_loaded("a") and not registry.is_loaded("b")


def test_preload_loads_everything_or_the_named_models(tmp_path: Path) -> None:
    loader = CountingLoader()
    registry = ModelRegistry([_spec("a", tmp_path), _spec("b", tmp_path)], "cpu", loader=loader)
    registry.preload(["b"])
    assert loader.calls == ["b"]
    registry.preload()
    assert sorted(loader.calls) == ["a", "b"]


def test_failed_load_is_retried(tmp_path: Path) -> None:
    loader = CountingLoader(fail={"a"})
    registry = ModelRegistry([_spec("a", tmp_path)], "cpu", loader=loader)
    with pytest.raises(RuntimeModelError):
        registry.get("a")
    loader.fail.clear()
    registry.get("a")
    assert loader.calls == ["a", "a"]


def test_default_loader_reports_missing_models(tmp_path: Path) -> None:
    registry = ModelRegistry([_spec("gone", tmp_path)], "cpu")
    with pytest.raises(RuntimeModelError, match="does not exist"):
        registry.get("gone")


def test_real_model_through_the_registry(runtime_demo_spec: ModelSpec) -> None:
    registry = ModelRegistry([runtime_demo_spec], "cpu")
    model = registry.get("demo")
    assert model is registry.get("demo")
    assert model.spec is runtime_demo_spec
