from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from app.runtime.pipelines import LoadedModel
from app.runtime.samplers import SAMPLERS, make_scheduler, resolve_sampler, sampler_names, scheduler_config
from app.runtime.types import GenerationParams, ImagePrompt

REQUIRED = [
    "Euler a",
    "Euler",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DDIM",
    "UniPC",
    "Heun",
]


def test_required_samplers_are_offered() -> None:
    assert set(REQUIRED) <= set(sampler_names())
    assert sampler_names() == list(SAMPLERS)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Euler a", "Euler a"),
        ("euler A", "Euler a"),
        ("  EULER   a ", "Euler a"),
        ("k_euler_a", "Euler a"),
        ("euler_a", "Euler a"),
        ("euler_ancestral", "Euler a"),
        ("k_euler", "Euler"),
        ("dpm++ 2m karras", "DPM++ 2M Karras"),
        ("k_dpmpp_2m_ka", "DPM++ 2M Karras"),
        ("dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras"),
        ("k_dpmpp_sde_ka", "DPM++ SDE Karras"),
        ("uni_pc", "UniPC"),
        ("ddim", "DDIM"),
    ],
)
def test_resolve_sampler_accepts_names_and_aliases(given: str, expected: str) -> None:
    assert resolve_sampler(given) == expected


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        ("DPM++ 2M", "Karras", "DPM++ 2M Karras"),
        ("DPM++ 2M", "Automatic", "DPM++ 2M"),
        ("DPM++ 2M", None, "DPM++ 2M"),
        ("DPM++ 2M Karras", "karras", "DPM++ 2M Karras"),
        ("dpmpp_2m_sde", "Exponential", "DPM++ 2M SDE Exponential"),
    ],
)
def test_resolve_sampler_folds_a_separate_schedule(name: str, schedule: str | None, expected: str) -> None:
    assert resolve_sampler(name, schedule) == expected


@pytest.mark.parametrize(("name", "schedule"), [("LMS", None), ("k_lms", None), ("", None), ("Euler a", "Karras")])
def test_resolve_sampler_rejects_unknown(name: str, schedule: str | None) -> None:
    with pytest.raises(KeyError):
        resolve_sampler(name, schedule)


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import app.runtime, app.runtime.samplers, app.runtime.types, app.runtime.encoding\n"
        "app.runtime.resolve_sampler('euler_a')\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'fastapi', 'sqlalchemy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overrides_replace_the_models_own_sampler_settings() -> None:
    base: dict[str, Any] = {
        "_class_name": "DPMSolverMultistepScheduler",
        "beta_schedule": "scaled_linear",
        "use_karras_sigmas": True,
        "algorithm_type": "sde-dpmsolver++",
    }
    frozen = dict(base)
    euler = make_scheduler("Euler", base)
    assert type(euler).__name__ == "EulerDiscreteScheduler"
    assert euler.config.use_karras_sigmas is False
    dpm = make_scheduler("DPM++ 2M", base)
    assert dpm.config.algorithm_type == "dpmsolver++"
    assert dpm.config.use_karras_sigmas is False
    karras = make_scheduler("dpm++ 2m karras", base)
    assert karras.config.use_karras_sigmas is True
    assert scheduler_config("DPM++ 2M SDE", base)["algorithm_type"] == "sde-dpmsolver++"
    assert base == frozen


def test_scheduler_follows_the_models_training_config(runtime_model: LoadedModel) -> None:
    scheduler = make_scheduler("Euler a", runtime_model.scheduler_config)
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.prediction_type == "epsilon"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_on_the_demo_model(runtime_model: LoadedModel, name: str) -> None:
    steps: list[tuple[int, int]] = []

    def on_step(done: int, total: int) -> bool:
        steps.append((done, total))
        return True

    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler=name)
    [image] = runtime_model.generate(params, [ImagePrompt("a pony", "blurry", 7)], on_step=on_step)
    assert image.size == (64, 64)
    assert steps == [(1, 2), (2, 2)]
    pixels = np.asarray(image)
    assert pixels.std() > 0


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M SDE Karras", "DPM++ SDE Karras", "DPM2 a"])
def test_stochastic_samplers_draw_noise_per_image(runtime_model: LoadedModel, name: str) -> None:
    params = GenerationParams(width=64, height=64, steps=3, guidance_scale=5.0, sampler=name)
    first, second = ImagePrompt("a", "b", 1), ImagePrompt("c", "d", 2)
    batch = runtime_model.generate(params, [first, second])
    alone = runtime_model.generate(params, [second])
    diff = np.abs(np.asarray(batch[1], dtype=np.int16) - np.asarray(alone[0], dtype=np.int16))
    assert diff.max() <= 2
