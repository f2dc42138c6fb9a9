"""LoRAs a request names: checked against the catalog, the model and the plan before anything is queued.

A job stores its LoRA set in canonical form (sorted by name, weights resolved), which is part of
its batch key: jobs share a pipeline call only with the same set at the same weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from app.config import LoraSpec, ModelSpec
from app.errors import InvalidRequest
from app.generation.catalog import LoraCatalog
from app.generation.schemas import LoraRequest


@dataclass(frozen=True)
class ResolvedLora:
    spec: LoraSpec
    weight: float
    text_encoder_weight: float

    def stored(self) -> dict[str, object]:
        """What the job row keeps (``jobs.loras``) and the worker turns back into a ``LoraUse``."""
        return {"name": self.spec.name, "weight": self.weight, "text_encoder_weight": self.text_encoder_weight,
                "license": self.spec.license}


def resolve(requested: Sequence[LoraRequest] | None, spec: ModelSpec, catalog: LoraCatalog,
            max_loras: int | None) -> list[ResolvedLora]:
    """The request's LoRAs, sorted by name; a 400 naming the first one that is unknown, made for another
    model family, named twice, or beyond the plan's ``max_loras``."""
    if not requested:
        return []
    if max_loras is not None and len(requested) > max_loras:
        raise InvalidRequest(f"{len(requested)} LoRAs requested; your plan allows {max_loras} per request.",
                             code="too_many_loras", param="loras")
    resolved: dict[str, ResolvedLora] = {}
    for item in requested:
        lora = catalog.get(item.name)
        if lora is None:
            known = ", ".join(sorted(s.name for s in catalog.specs())) or "none"
            raise InvalidRequest(f"Unknown LoRA '{item.name}'. Available: {known}.", code="unknown_lora",
                                 param="loras")
        if lora.family != spec.family:
            raise InvalidRequest(f"LoRA '{lora.name}' is made for {lora.family} models; model '{spec.name}' is "
                                 f"{spec.family}.", code="incompatible_lora", param="loras")
        if lora.name in resolved:
            raise InvalidRequest(f"LoRA '{lora.name}' is named twice.", code="duplicate_lora", param="loras")
        weight = item.weight if item.weight is not None else lora.default_weight
        te_weight = item.text_encoder_weight if item.text_encoder_weight is not None else weight
        resolved[lora.name] = ResolvedLora(lora, float(weight), float(te_weight))
    return [resolved[name] for name in sorted(resolved)]


def batch_key_part(loras: Sequence[ResolvedLora]) -> str:
    """A short, fixed-length stand-in for the set (the batch key column is bounded; names are not)."""
    if not loras:
        return ""
    canonical = ";".join(f"{x.spec.name}:{x.weight:g}:{x.text_encoder_weight:g}" for x in loras)
    return "|lora=" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def screened_text(requested: Sequence[LoraRequest] | None, catalog: LoraCatalog) -> str:
    """The words a request's LoRAs bring (their names and trigger words), screened with its prompt:
    a LoRA named for something the policy refuses is refused like the words themselves."""
    words: list[str] = []
    for item in requested or ():
        words.append(item.name.replace("_", " ").replace("-", " "))
        lora = catalog.get(item.name)
        if lora is not None:
            words.extend(lora.trigger_words)
    return ", ".join(words)
