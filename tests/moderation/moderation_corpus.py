"""Loads the labelled prompt corpus (``moderation_corpus.toml``) for the tests and the benchmark."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS_PATH = Path(__file__).with_name("moderation_corpus.toml")


@dataclass(frozen=True)
class Case:
    prompt: str
    negative: str
    nsfw: bool | None  # None: the case holds on both kinds of model
    rating: str
    category: str
    cls: str

    @property
    def model_flags(self) -> tuple[bool, ...]:
        return (False, True) if self.nsfw is None else (self.nsfw,)

    def __str__(self) -> str:
        extra = f" negative={self.negative!r}" if self.negative else ""
        return f"[{self.cls}] {self.prompt!r}{extra} nsfw={self.nsfw} rating={self.rating}"


def _case(raw: dict[str, Any]) -> Case:
    return Case(
        prompt=raw["prompt"],
        negative=raw.get("negative", ""),
        nsfw=raw.get("nsfw"),
        rating=raw.get("rating", "explicit"),
        category=raw.get("category", "csam"),
        cls=raw["class"],
    )


def load_corpus() -> tuple[list[Case], list[Case]]:
    """(blocked, benign) cases."""
    data = tomllib.loads(CORPUS_PATH.read_text(encoding="utf-8"))
    return [_case(raw) for raw in data["blocked"]], [_case(raw) for raw in data["benign"]]
