from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from runtime_helpers import assert_images_close

from app.runtime.demo_model import AURAFLOW_SCHEDULER_CONFIG, SD3_SCHEDULER_CONFIG
from app.runtime.pipelines import LoadedModel
from app.runtime.samplers import (
    FLOW_SAMPLERS,
    SAMPLERS,
    make_scheduler,
    resolve_sampler,
    sampler_names,
    samplers_for_family,
    scheduler_config,
)
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
        "import app.runtime.sizes, app.runtime.families, app.runtime.oom, app.config\n"
        "app.runtime.resolve_sampler('euler_a')\n"
        "app.runtime.resolve_sampler('euler', family='sd3')\n"
        "spec = app.config.ModelSpec(name='m', family='auraflow', path='/m')\n"
        "assert app.runtime.check_size(spec, 1024, 1024) is None\n"
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
    assert_images_close(batch[1], alone[0])


def test_samplers_per_family() -> None:
    assert samplers_for_family("sdxl") == sampler_names()
    assert samplers_for_family("sd3") == samplers_for_family("auraflow") == list(FLOW_SAMPLERS)
    assert set(FLOW_SAMPLERS) == {"Euler", "Heun", "DPM++ 2M", "UniPC"}
    with pytest.raises(KeyError):
        samplers_for_family("flux")


@pytest.mark.parametrize(
    ("name", "family", "expected"),
    [
        ("euler", "sd3", "Euler"),
        ("k_euler", "auraflow", "Euler"),
        ("dpmpp_2m", "sd3", "DPM++ 2M"),
        ("uni_pc", "auraflow", "UniPC"),
        ("Euler a", "sdxl", "Euler a"),
    ],
)
def test_resolve_sampler_within_a_family(name: str, family: str, expected: str) -> None:
    assert resolve_sampler(name, family=family) == expected


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M Karras", "DPM++ 2M SDE", "DDIM", "k_euler_a"])
def test_noise_prediction_samplers_do_not_exist_for_flow_models(name: str) -> None:
    with pytest.raises(KeyError):
        resolve_sampler(name, family="sd3")
    with pytest.raises(KeyError):
        resolve_sampler("DPM++ 2M", "Karras", family="auraflow")


@pytest.mark.parametrize("base", [SD3_SCHEDULER_CONFIG, AURAFLOW_SCHEDULER_CONFIG])
def test_flow_schedulers_keep_the_models_shift(base: dict[str, Any]) -> None:
    base = {"_class_name": "FlowMatchEulerDiscreteScheduler", **base}
    euler = make_scheduler("Euler", base, family="sd3")
    assert type(euler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert euler.config.shift == base["shift"]
    heun = make_scheduler("Heun", base, family="sd3")
    assert type(heun).__name__ == "FlowMatchHeunDiscreteScheduler"
    assert heun.config.shift == base["shift"]
    for name in ("DPM++ 2M", "UniPC"):
        solver = make_scheduler(name, base, family="auraflow")
        assert solver.config.use_flow_sigmas is True
        assert solver.config.prediction_type == "flow_prediction"
        assert solver.config.flow_shift == base["shift"]
    assert "flow_shift" not in scheduler_config("Euler", base, family="sd3")
