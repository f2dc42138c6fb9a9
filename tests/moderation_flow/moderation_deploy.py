"""A deployment set up for moderation tests: two models (one Pony-style with rating tags), an
operator block list, a tiny fake output classifier, a low prompt-length cap."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

FAKE_SCORE = 0.9
OPERATOR_BLOCKED_TERM = "zorblax"
MAX_PROMPT_CHARS = 300


def write_models_file(directory: Path, demo_model_dir: Path) -> Path:
    """`demo` is a plain model; `pony` is the same weights declared Pony-family (rating tags,
    NSFW-capable), with Pony's score-tag prefix."""
    path = directory / "models.toml"
    common = f'''path = "{demo_model_dir}"
min_width = 64
min_height = 64
defaults = {{ steps = 2, width = 64, height = 64 }}
'''
    path.write_text(f'''[[models]]
name = "demo"
prompt_prefix = "score_9, score_8_up, score_7_up"
{common}
[[models]]
name = "pony"
prompt_prefix = "score_9, score_8_up, score_7_up"
rating_tags = true
nsfw_capable = true
{common}''')
    return path


def write_block_file(directory: Path) -> Path:
    path = directory / "operator_block.txt"
    path.write_text(f"# this deployment's own blocked terms\n{OPERATOR_BLOCKED_TERM}\n")
    return path


def write_fake_classifier(directory: Path, score: float = FAKE_SCORE) -> Path:
    """A torch.export program that gives every image the same score, saved like an operator's
    real classifier and loaded through the same loader."""
    import torch

    class FixedScore(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("score", torch.tensor(score))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            # Touch the pixels so the program really takes the batch it is given.
            return self.score + images.mean(dim=(1, 2, 3)) * 0.0

    example = torch.zeros(2, 3, 32, 32)
    program = torch.export.export(FixedScore(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = directory / "fake_classifier.pt2"
    torch.export.save(program, str(path))
    return path


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def eventually(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
    """Polls ``check`` until it holds; returns the seconds it took (fails after ``timeout``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


def generate(client: httpx.Client, headers: dict[str, str], prompt: str, **body: object) -> httpx.Response:
    payload = {"prompt": prompt, "size": "64x64", "steps": 2, "response_format": "b64_json", **body}
    return client.post("/v1/images/generations", json=payload, headers=headers)
