from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import ModelSpec
from app.runtime.sizes import check_size, parse_aspect_ratio, parse_size


def _spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "path": Path("/models/m"), **fields})


def test_parse_size_and_ratio() -> None:
    assert parse_size("832x1216") == (832, 1216)
    assert parse_size(" 1024 X 1024 ") == (1024, 1024)
    assert parse_aspect_ratio("16:9") == pytest.approx(16 / 9)
    assert parse_aspect_ratio("2/3") == pytest.approx(2 / 3)
    for bad in ("1024", "axb", "1024x", "-8x8"):
        with pytest.raises(ValueError):
            parse_size(bad)
    for bad in ("16", "0:9", "a:b"):
        with pytest.raises(ValueError):
            parse_aspect_ratio(bad)


def test_unrestricted_model_checks_multiples_and_bounds() -> None:
    spec = _spec()
    assert check_size(spec, 1024, 1024) is None
    assert check_size(spec, 832, 1216) is None
    assert "multiples of 8" in (check_size(spec, 1020, 1024) or "")
    assert "width must be between 256 and 2048" in (check_size(spec, 4096, 1024) or "")
    assert "height must be between" in (check_size(spec, 1024, 128) or "")


def test_flow_families_need_multiples_of_16() -> None:
    spec = _spec(family="sd3")
    assert check_size(spec, 1024, 1024) is None
    assert "multiples of 16" in (check_size(spec, 1016, 1024) or "")
    assert "multiples of 16" in (check_size(_spec(family="auraflow"), 1024, 1000) or "")


def test_allowed_sizes_and_aspect_ratios() -> None:
    spec = _spec(allowed_sizes=["1024x1024", "832x1216"], allowed_aspect_ratios=["16:9"])
    assert check_size(spec, 1024, 1024) is None
    assert check_size(spec, 832, 1216) is None
    # 1344x768 is 1.75, within the tolerance of 16:9 (1.778); 1216x832 is 1.46.
    assert check_size(spec, 1344, 768) is None
    message = check_size(spec, 1216, 832)
    assert message is not None
    assert "1024x1024, 832x1216, aspect ratio 16:9" in message
    # Bounds are checked before the allow-lists.
    assert "multiples of 8" in (check_size(spec, 1004, 1004) or "")


def test_spec_validates_its_size_rules() -> None:
    with pytest.raises(ValidationError, match="is not a size like"):
        _spec(allowed_sizes=["1024x1000x"])
    with pytest.raises(ValidationError, match="allowed_sizes entry '4096x4096'"):
        _spec(allowed_sizes=["4096x4096"])
    with pytest.raises(ValidationError, match="aspect ratio"):
        _spec(allowed_aspect_ratios=["wide"])
    with pytest.raises(ValidationError, match="defaults: size 1024x1024 is not offered"):
        _spec(allowed_sizes=["832x1216"])
    assert _spec(allowed_sizes=["832x1216"], defaults={"width": 832, "height": 1216}).allowed_sizes == ["832x1216"]
    with pytest.raises(ValidationError, match="multiple of 16"):
        _spec(family="sd3", defaults={"width": 1016, "height": 1024})


def test_new_spec_fields_default_to_the_old_behaviour() -> None:
    spec = _spec()
    assert spec.family == "sdxl"
    assert spec.vae is None and spec.vae_dtype == "auto" and spec.clip_skip is None
    assert spec.allowed_sizes is None and spec.allowed_aspect_ratios is None
    assert spec.compile is False and spec.compile_batch_sizes == [1, 2, 4, 8]
    assert spec.defaults.sampler == "Euler a"


def test_flow_families_default_to_their_own_sampler() -> None:
    assert _spec(family="sd3").defaults.sampler == "Euler"
    assert _spec(family="auraflow").defaults.sampler == "Euler"
    assert _spec(family="sd3", defaults={"sampler": "UniPC"}).defaults.sampler == "UniPC"


def test_compile_batch_sizes_are_sorted_and_positive() -> None:
    assert _spec(compile_batch_sizes=[4, 1, 2, 2]).compile_batch_sizes == [1, 2, 4]
    with pytest.raises(ValidationError):
        _spec(compile_batch_sizes=[0, 2])
    with pytest.raises(ValidationError):
        _spec(compile_batch_sizes=[])
    with pytest.raises(ValidationError):
        _spec(clip_skip=0)
