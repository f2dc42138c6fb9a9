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


# -- memory budget -----------------------------------------------------------------------


class FakeModel:
    """What the registry needs of a loaded model: its size on the device."""

    def __init__(self, name: str, memory_bytes: int) -> None:
        self.name = name
        self.memory_bytes = memory_bytes


class SizedLoader:
    """Loads fake models whose sizes (estimated and actual) the test decides."""

    def __init__(self, sizes: dict[str, int], actual: dict[str, int] | None = None) -> None:
        self.sizes = sizes
        self.actual = actual or {}
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def load(self, spec: ModelSpec, device: str) -> FakeModel:
        self.calls.append(spec.name)
        if spec.name in self.fail:
            raise RuntimeModelError(f"{spec.name} is broken")
        return FakeModel(spec.name, self.actual.get(spec.name, self.sizes[spec.name]))

    def size(self, spec: ModelSpec, device: str) -> int:
        return self.sizes[spec.name]


def _budgeted(
    tmp_path: Path, sizes: dict[str, int], budget: int, **kwargs: object
) -> tuple[ModelRegistry, SizedLoader]:
    loader = SizedLoader(sizes, **kwargs)
    registry = ModelRegistry(
        [_spec(name, tmp_path) for name in sizes],
        "cpu",
        loader=loader.load,
        sizer=loader.size,
        memory_budget_bytes=budget,
        load_wait_seconds=0.2,
    )
    return registry, loader


def test_least_recently_used_model_is_evicted(tmp_path: Path) -> None:
    registry, loader = _budgeted(tmp_path, {"a": 40, "b": 40, "c": 40}, budget=100)
    registry.get("a")
    registry.get("b")
    registry.get("a")  # a is now the most recently used
    registry.get("c")
    assert registry.loaded_names() == ["a", "c"]
    assert registry.memory_used_bytes() == 80
    assert registry.evictions == 1
    registry.get("b")
    assert registry.loaded_names() == ["b", "c"]
    assert loader.calls == ["a", "b", "c", "b"]


def test_models_in_use_are_never_evicted(tmp_path: Path) -> None:
    registry, _ = _budgeted(tmp_path, {"a": 40, "b": 40, "c": 40}, budget=100)
    with registry.use("a") as a:
        assert isinstance(a, FakeModel) and a.name == "a"
        registry.get("b")
        registry.get("c")  # evicts b, not the pinned a
        assert registry.loaded_names() == ["a", "c"]
        with registry.use("c"), pytest.raises(RuntimeModelError, match="models in use leave only 20"):
            registry.get("b")
    # Released: a is the least recently used now.
    registry.get("b")
    assert registry.loaded_names() == ["b", "c"]


def test_a_load_waits_for_a_pinned_model_to_be_released(tmp_path: Path) -> None:
    registry, _ = _budgeted(tmp_path, {"a": 60, "b": 60}, budget=100)
    registry.load_wait_seconds = 5.0
    outcome: list[object] = []
    with registry.use("a"):
        thread = threading.Thread(target=lambda: outcome.append(registry.get("b")))
        thread.start()
        time.sleep(0.1)
        assert thread.is_alive() and not outcome
    thread.join(timeout=5)
    assert [m.name for m in outcome] == ["b"]
    assert registry.loaded_names() == ["b"]


def test_model_larger_than_the_budget_fails_at_once(tmp_path: Path) -> None:
    registry, loader = _budgeted(tmp_path, {"big": 150}, budget=100)
    with pytest.raises(RuntimeModelError, match="more than the device budget"):
        registry.get("big")
    assert loader.calls == []


def test_failed_load_gives_back_its_reservation(tmp_path: Path) -> None:
    registry, loader = _budgeted(tmp_path, {"a": 60, "b": 60}, budget=100)
    loader.fail.add("a")
    with pytest.raises(RuntimeModelError):
        registry.get("a")
    registry.get("b")
    assert registry.loaded_names() == ["b"]


def test_underestimated_model_still_keeps_the_budget(tmp_path: Path) -> None:
    registry, _ = _budgeted(tmp_path, {"a": 50, "b": 10}, budget=100, actual={"b": 70})
    registry.get("a")
    registry.get("b")
    assert registry.loaded_names() == ["b"]
    assert registry.memory_used_bytes() == 70


def test_unload_spares_models_in_use(tmp_path: Path) -> None:
    registry, _ = _budgeted(tmp_path, {"a": 10}, budget=100)
    with registry.use("a"):
        assert registry.unload("a") is False
    assert registry.unload("a") is True
    assert registry.loaded_names() == []
    assert registry.unload("a") is False


def test_demo_models_under_a_tiny_budget(runtime_demo_dir: Path, runtime_demo_spec: ModelSpec) -> None:
    from app.runtime.memory import estimate_model_bytes

    specs = [runtime_demo_spec.model_copy(update={"name": name}) for name in ("demo-a", "demo-b")]
    estimate = estimate_model_bytes(specs[0], "cpu")
    registry = ModelRegistry(specs, "cpu", memory_budget_bytes=int(estimate * 1.5))
    with registry.use("demo-a") as model:
        # Non-persistent buffers (CLIP's position ids) are not in the files.
        assert estimate <= model.memory_bytes <= estimate * 1.05
    registry.get("demo-b")
    assert registry.loaded_names() == ["demo-b"]
    assert registry.evictions == 1
