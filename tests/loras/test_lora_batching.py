"""Jobs share a pipeline call only with the same LoRA set at the same weights (it is part of the batch key)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.config import LoraSpec, demo_model_spec
from app.generation.catalog import LoraCatalog
from app.generation.loras import resolve
from app.generation.schemas import GenerationRequest
from app.generation.service import build_job
from app.quotas.limits import plan_limits

CATALOG = LoraCatalog(lambda: [LoraSpec(name="a", path=Path("/x/a.safetensors")),
                               LoraSpec(name="b", path=Path("/x/b.safetensors"), default_weight=0.7)])


def _principal() -> Any:
    plan = SimpleNamespace(code="free", is_paid=False, monthly_image_quota=None, daily_image_quota=None,
                           requests_per_minute=None, burst=None, max_concurrent_jobs=None, max_queued_jobs=None,
                           max_width=1024, max_height=1024, max_steps=50, max_n=4, max_loras=4, priority=0,
                           allowed_models=None)
    return SimpleNamespace(plan=plan, account=SimpleNamespace(id="acct"), key=SimpleNamespace(id="key",
                                                                                               metadata_mode="full"))


def _key(loras: list[dict[str, object]] | None) -> str:
    principal = _principal()
    spec = demo_model_spec(Path("/models/demo"))
    req = GenerationRequest.model_validate({"prompt": "p", "size": "512x512", "loras": loras})
    resolved = resolve(req.loras, spec, CATALOG, 4)
    return build_job(principal, req, spec, plan_limits(principal.plan), loras=resolved).batch_key


def test_the_lora_set_and_its_weights_are_part_of_the_batch_key() -> None:
    plain = _key(None)
    assert _key([]) == plain
    with_a = _key([{"name": "a", "weight": 1.0}])
    assert with_a != plain
    assert _key([{"name": "a"}]) == with_a  # the default weight is the weight
    assert _key([{"name": "a", "weight": 0.5}]) != with_a
    assert _key([{"name": "a", "weight": 1.0, "text_encoder_weight": 0.5}]) != with_a
    both = _key([{"name": "a"}, {"name": "b"}])
    assert both == _key([{"name": "b", "weight": 0.7}, {"name": "a", "weight": 1.0}])  # order does not matter
    assert both not in (with_a, plain)
    assert len(_key([{"name": "a"}, {"name": "b"}])) <= 200  # the column's bound, whatever the names


def test_a_job_stores_its_set_sorted_with_resolved_weights() -> None:
    principal, spec = _principal(), demo_model_spec(Path("/models/demo"))
    req = GenerationRequest.model_validate({"prompt": "p", "loras": [{"name": "b"}, {"name": "a", "weight": -1}]})
    job = build_job(principal, req, spec, plan_limits(principal.plan), loras=resolve(req.loras, spec, CATALOG, 4))
    assert job.loras == [{"name": "a", "weight": -1.0, "text_encoder_weight": -1.0, "license": None},
                         {"name": "b", "weight": 0.7, "text_encoder_weight": 0.7, "license": None}]


@pytest.mark.parametrize("prompt, text, loras", [
    ("a pony <lora:a:0.8>", "a pony", [("a", 0.8, 0.8)]),
    ("<lora:a> a pony, <LORA:b:0.5:1.2> at dusk", "a pony, at dusk", [("a", 1.0, 1.0), ("b", 1.2, 0.5)]),
    ("no tags here", "no tags here", []),
])
def test_a1111_lora_tags_leave_the_prompt_and_become_loras(prompt: str, text: str,
                                                           loras: list[tuple[str, float, float]]) -> None:
    from app.compat.service import extract_lora_tags

    cleaned, found = extract_lora_tags(prompt)
    assert cleaned == text
    assert [(x["name"], x["weight"], x["text_encoder_weight"]) for x in found] == loras


def test_a_malformed_lora_tag_is_a_400() -> None:
    from app.compat.service import extract_lora_tags
    from app.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        extract_lora_tags("a pony <lora:a:strong>")
    assert caught.value.code == "invalid_lora_tag" and caught.value.param == "prompt"
