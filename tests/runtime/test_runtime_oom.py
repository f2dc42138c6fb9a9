from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from runtime_helpers import assert_images_close

from app.runtime.oom import is_out_of_memory, run_with_oom_split
from app.runtime.pipelines import LoadedModel
from app.runtime.types import GenerationCancelled, GenerationParams, ImagePrompt


class FakeOOM(Exception):
    pass


class Device:
    """A fake generate that runs out of memory above ``capacity`` items (and on poisoned ones)."""

    def __init__(self, capacity: int, poisoned: frozenset[int] = frozenset()) -> None:
        self.capacity = capacity
        self.poisoned = poisoned
        self.calls: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> list[str]:
        self.calls.append(list(items))
        if len(items) > self.capacity or self.poisoned & set(items):
            raise FakeOOM(f"{len(items)} items do not fit")
        return [f"img{item}" for item in items]


def _is_fake(exc: Exception) -> bool:
    return isinstance(exc, FakeOOM)


def test_fitting_call_runs_once() -> None:
    device = Device(capacity=8)
    assert run_with_oom_split(device, [1, 2, 3], is_oom=_is_fake) == ["img1", "img2", "img3"]
    assert device.calls == [[1, 2, 3]]


def test_oversized_call_is_halved_until_it_fits() -> None:
    device = Device(capacity=2)
    released: list[Exception] = []
    results = run_with_oom_split(device, list(range(7)), is_oom=_is_fake, on_oom=released.append)
    assert results == [f"img{i}" for i in range(7)]
    assert device.calls == [
        [0, 1, 2, 3, 4, 5, 6],
        [0, 1, 2, 3],
        [0, 1],
        [2, 3],
        [4, 5, 6],
        [4, 5],
        [6],
    ]
    assert len(released) == 3
    assert all(exc.__traceback__ is None for exc in released)


def test_item_that_fails_alone_is_reported_and_the_rest_succeed() -> None:
    device = Device(capacity=4, poisoned=frozenset({2}))
    results = run_with_oom_split(device, [0, 1, 2, 3], is_oom=_is_fake)
    assert results[:2] == ["img0", "img1"] and results[3] == "img3"
    assert isinstance(results[2], FakeOOM)


def test_other_errors_propagate_unsplit() -> None:
    def broken(items: Sequence[int]) -> list[int]:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_with_oom_split(broken, [1, 2], is_oom=_is_fake)
    assert run_with_oom_split(broken, [], is_oom=_is_fake) == []


def test_wrong_result_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected 2 results"):
        run_with_oom_split(lambda items: [1], [1, 2], is_oom=_is_fake)


def test_default_predicate_recognises_torch_and_message_ooms() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_generate_split_on_the_demo_model(runtime_model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
    images = [ImagePrompt(f"pony {i}", "", 100 + i) for i in range(3)]
    expected = runtime_model.generate(params, images)
    real_generate = runtime_model.generate
    sizes: list[int] = []

    def tight_device(p: GenerationParams, batch: Sequence[ImagePrompt], on_step: object = None) -> list:
        sizes.append(len(batch))
        if len(batch) > 1 or batch[0].seed == 102:
            raise FakeOOM("fake CUDA out of memory")
        return real_generate(p, batch)

    monkeypatch.setattr(runtime_model, "generate", tight_device)
    results = runtime_model.generate_split(params, images, is_oom=_is_fake)
    assert sizes == [3, 2, 1, 1, 1]
    assert isinstance(results[2], FakeOOM)
    for got, want in zip(results[:2], expected[:2], strict=True):
        assert not isinstance(got, Exception)
        assert_images_close(got, want)


def test_generate_split_validates_and_cancels_like_generate(runtime_model: LoadedModel) -> None:
    params = GenerationParams(width=60, height=64, steps=2, guidance_scale=5.0, sampler="Euler")
    with pytest.raises(ValueError, match="multiples of 8"):
        runtime_model.generate_split(params, [ImagePrompt("a", "", 1)])
    ok = GenerationParams(width=64, height=64, steps=3, guidance_scale=5.0, sampler="Euler")
    with pytest.raises(GenerationCancelled):
        runtime_model.generate_split(ok, [ImagePrompt("a", "", 1)], on_step=lambda done, total: False)
