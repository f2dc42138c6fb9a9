"""AUTOMATIC1111 sampler names and the diffusers schedulers that implement them.

The API process imports this module to validate requests, so it must not
import torch or diffusers at import time; only ``make_scheduler`` does, lazily.

Mapping notes (diffusers' own A1111 table, checked against diffusers 0.42):

- A1111's "DPM++ SDE" is k-diffusion's second-order *single-step* SDE solver.
  diffusers offers two stand-ins: ``DPMSolverSDEScheduler`` (a port of it,
  but it needs the ``torchsde`` package for its Brownian tree) and
  ``DPMSolverSinglestepScheduler`` with ``algorithm_type="sde-dpmsolver++"``
  (same family, noise from the per-image generators). We use the latter: no
  extra dependency, and its noise comes from the seeded generators, so a
  seed reproduces and a batched image equals the same image run alone.
- "LMS" is left out: diffusers' ``LMSDiscreteScheduler`` needs scipy, which the
  service does not otherwise depend on.
- "DPM fast", "DPM adaptive", "DPM++ 2S a", "Restart" have no diffusers equivalent.

Flow-matching families (SD3, AuraFlow) predict a velocity, not noise, so the
table above does not apply to them; they get their own, smaller one:

- "Euler" is ``FlowMatchEulerDiscreteScheduler``, the one these models ship
  with, and "Heun" its second-order sibling ``FlowMatchHeunDiscreteScheduler``.
- "DPM++ 2M" and "UniPC" are the multistep solvers in their flow mode
  (``use_flow_sigmas``, ``prediction_type="flow_prediction"``), with the
  model's ``shift`` carried over as ``flow_shift``.
- No ancestral or SDE sampler: the SD3 and AuraFlow pipelines do not hand the
  per-image generators to ``scheduler.step``, so their noise could not be
  seeded per image and a seed would not reproduce. Karras/exponential
  schedules are left out too: diffusers' multistep solvers compute those from
  the noise-prediction betas, not from the flow sigmas.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from app.runtime.families import SamplerSet, family_traits

# A model's own scheduler config may enable any of these; each sampler states
# all of them so that "Euler" on a model shipped with Karras sigmas is still Euler.
_PLAIN_SIGMAS: Mapping[str, Any] = MappingProxyType(
    {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
)
_KARRAS = MappingProxyType({**_PLAIN_SIGMAS, "use_karras_sigmas": True})
_EXPONENTIAL = MappingProxyType({**_PLAIN_SIGMAS, "use_exponential_sigmas": True})


@dataclass(frozen=True)
class SamplerDef:
    """How one A1111 sampler maps onto diffusers."""

    name: str
    scheduler_class: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


def _dpmpp_multistep(order: int, algorithm: str, sigmas: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **sigmas,
        "algorithm_type": algorithm,
        "solver_order": order,
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "final_sigmas_type": "zero",
    }


def _dpmpp_singlestep_sde(sigmas: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **sigmas,
        "algorithm_type": "sde-dpmsolver++",
        "solver_order": 2,
        "solver_type": "midpoint",
        "lower_order_final": True,
        "final_sigmas_type": "zero",
    }


_DEFS: tuple[SamplerDef, ...] = (
    SamplerDef(
        "Euler a",
        "EulerAncestralDiscreteScheduler",
        {},
        ("k_euler_a", "k_euler_ancestral", "euler_a", "euler_ancestral", "euler-a"),
    ),
    SamplerDef("Euler", "EulerDiscreteScheduler", {**_PLAIN_SIGMAS, "final_sigmas_type": "zero"}, ("k_euler",)),
    SamplerDef("Heun", "HeunDiscreteScheduler", dict(_PLAIN_SIGMAS), ("k_heun",)),
    SamplerDef("DPM2", "KDPM2DiscreteScheduler", dict(_PLAIN_SIGMAS), ("k_dpm_2", "dpm_2")),
    SamplerDef("DPM2 Karras", "KDPM2DiscreteScheduler", dict(_KARRAS), ("k_dpm_2_ka", "dpm_2_karras")),
    SamplerDef("DPM2 a", "KDPM2AncestralDiscreteScheduler", dict(_PLAIN_SIGMAS), ("k_dpm_2_a", "dpm_2_ancestral")),
    SamplerDef(
        "DPM2 a Karras",
        "KDPM2AncestralDiscreteScheduler",
        dict(_KARRAS),
        ("k_dpm_2_a_ka", "dpm_2_ancestral_karras"),
    ),
    SamplerDef(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(2, "dpmsolver++", _PLAIN_SIGMAS),
        ("k_dpmpp_2m", "dpmpp_2m"),
    ),
    SamplerDef(
        "DPM++ 2M Karras",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(2, "dpmsolver++", _KARRAS),
        ("k_dpmpp_2m_ka", "dpmpp_2m_karras"),
    ),
    SamplerDef(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(2, "sde-dpmsolver++", _PLAIN_SIGMAS),
        ("k_dpmpp_2m_sde", "dpmpp_2m_sde"),
    ),
    SamplerDef(
        "DPM++ 2M SDE Karras",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(2, "sde-dpmsolver++", _KARRAS),
        ("k_dpmpp_2m_sde_ka", "dpmpp_2m_sde_karras"),
    ),
    SamplerDef(
        "DPM++ 2M SDE Exponential",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(2, "sde-dpmsolver++", _EXPONENTIAL),
        ("k_dpmpp_2m_sde_exp", "dpmpp_2m_sde_exponential"),
    ),
    SamplerDef(
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(3, "sde-dpmsolver++", _PLAIN_SIGMAS),
        ("k_dpmpp_3m_sde", "dpmpp_3m_sde"),
    ),
    SamplerDef(
        "DPM++ 3M SDE Karras",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(3, "sde-dpmsolver++", _KARRAS),
        ("k_dpmpp_3m_sde_ka", "dpmpp_3m_sde_karras"),
    ),
    SamplerDef(
        "DPM++ 3M SDE Exponential",
        "DPMSolverMultistepScheduler",
        _dpmpp_multistep(3, "sde-dpmsolver++", _EXPONENTIAL),
        ("k_dpmpp_3m_sde_exp", "dpmpp_3m_sde_exponential"),
    ),
    SamplerDef(
        "DPM++ SDE",
        "DPMSolverSinglestepScheduler",
        _dpmpp_singlestep_sde(_PLAIN_SIGMAS),
        ("k_dpmpp_sde", "dpmpp_sde"),
    ),
    SamplerDef(
        "DPM++ SDE Karras",
        "DPMSolverSinglestepScheduler",
        _dpmpp_singlestep_sde(_KARRAS),
        ("k_dpmpp_sde_ka", "dpmpp_sde_karras"),
    ),
    # eta=0 (the pipeline's default) is A1111's default DDIM.
    SamplerDef("DDIM", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, ("ddim",)),
    SamplerDef("PLMS", "PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}, ("plms",)),
    SamplerDef(
        "UniPC",
        "UniPCMultistepScheduler",
        {**_PLAIN_SIGMAS, "solver_order": 2, "predict_x0": True, "solver_type": "bh2"},
        ("uni_pc", "unipc"),
    ),
)


def _flow_multistep(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {**_PLAIN_SIGMAS, **overrides, "use_flow_sigmas": True, "prediction_type": "flow_prediction"}


_FLOW_DEFS: tuple[SamplerDef, ...] = (
    SamplerDef(
        "Euler",
        "FlowMatchEulerDiscreteScheduler",
        {**_PLAIN_SIGMAS, "stochastic_sampling": False, "invert_sigmas": False},
        ("k_euler", "flow_euler", "euler_flow"),
    ),
    SamplerDef("Heun", "FlowMatchHeunDiscreteScheduler", {}, ("k_heun",)),
    SamplerDef(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        _flow_multistep(
            {
                "algorithm_type": "dpmsolver++",
                "solver_order": 2,
                "solver_type": "midpoint",
                "lower_order_final": True,
                "euler_at_final": False,
                "final_sigmas_type": "zero",
            },
        ),
        ("k_dpmpp_2m", "dpmpp_2m"),
    ),
    SamplerDef(
        "UniPC",
        "UniPCMultistepScheduler",
        _flow_multistep(
            {"solver_order": 2, "predict_x0": True, "solver_type": "bh2", "final_sigmas_type": "zero"},
        ),
        ("uni_pc", "unipc"),
    ),
)

# The SDXL (noise-prediction) table; ``resolve_sampler`` and friends use it unless told a family.
SAMPLERS: Mapping[str, SamplerDef] = MappingProxyType({d.name: d for d in _DEFS})
FLOW_SAMPLERS: Mapping[str, SamplerDef] = MappingProxyType({d.name: d for d in _FLOW_DEFS})
_TABLES: Mapping[SamplerSet, Mapping[str, SamplerDef]] = MappingProxyType(
    {"diffusion": SAMPLERS, "flow": FLOW_SAMPLERS}
)

# A1111 >= 1.9 sends the sigma schedule separately ("scheduler": "Karras");
# these are the schedules that fold back into one of the names above.
_SCHEDULE_SUFFIXES: Mapping[str, str] = MappingProxyType({"karras": "Karras", "exponential": "Exponential"})
_DEFAULT_SCHEDULES = frozenset({"", "automatic", "uniform", "normal", "default"})


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip()).casefold()


def _lookup(defs: tuple[SamplerDef, ...]) -> Mapping[str, str]:
    return MappingProxyType(
        {
            **{_key(alias): d.name for d in defs for alias in d.aliases},
            **{_key(d.name): d.name for d in defs},
        }
    )


_LOOKUPS: Mapping[SamplerSet, Mapping[str, str]] = MappingProxyType(
    {"diffusion": _lookup(_DEFS), "flow": _lookup(_FLOW_DEFS)}
)


def _sampler_set(family: str) -> SamplerSet:
    return family_traits(family).sampler_set


def sampler_names() -> list[str]:
    """Every canonical sampler name this runtime can run on SDXL models."""
    return list(SAMPLERS)


def samplers_for_family(family: str) -> list[str]:
    """The canonical sampler names valid for ``family`` ("sdxl", "sd3", "auraflow")."""
    return list(_TABLES[_sampler_set(family)])


def sampler_def(name: str, *, family: str = "sdxl") -> SamplerDef:
    """How sampler ``name`` (any accepted spelling) maps onto diffusers for ``family``."""
    return _TABLES[_sampler_set(family)][resolve_sampler(name, family=family)]


def resolve_sampler(name: str, schedule: str | None = None, *, family: str = "sdxl") -> str:
    """The canonical name for ``name`` (any case, A1111/ComfyUI aliases accepted) within ``family``.

    ``schedule`` is A1111 1.9's separate "Schedule type": "Karras" or
    "Exponential" select the matching variant, "Automatic"/"Uniform" (or
    None) keep ``name`` as it is. Raises ``KeyError`` when nothing matches,
    including a name that exists only for another family ("Euler a" on SD3).
    """
    lookup = _LOOKUPS[_sampler_set(family)]
    canonical = lookup.get(_key(name))
    if canonical is None:
        raise KeyError(name)
    if schedule is None or _key(schedule) in _DEFAULT_SCHEDULES:
        return canonical
    suffix = _SCHEDULE_SUFFIXES.get(_key(schedule))
    if suffix is None:
        raise KeyError(f"{name} with schedule {schedule}")
    if canonical.endswith(f" {suffix}"):
        return canonical
    variant = lookup.get(_key(f"{canonical} {suffix}"))
    if variant is None:
        raise KeyError(f"{name} with schedule {schedule}")
    return variant


def scheduler_config(name: str, base_scheduler_config: Mapping[str, Any], *, family: str = "sdxl") -> dict[str, Any]:
    """The config for ``name``'s scheduler: the model's own, with the sampler's overrides on top."""
    sampler = sampler_def(name, family=family)
    config = {k: v for k, v in base_scheduler_config.items() if not k.startswith("_")}
    config.update(sampler.overrides)
    if config.get("use_flow_sigmas") and "flow_shift" not in base_scheduler_config:
        # The multistep solvers call the flow-match schedulers' ``shift`` ``flow_shift``.
        config["flow_shift"] = float(base_scheduler_config.get("shift", 1.0))
    return config


def make_scheduler(name: str, base_scheduler_config: Mapping[str, Any], *, family: str = "sdxl") -> Any:
    """A fresh diffusers scheduler for sampler ``name`` built on the model's scheduler config.

    The base config is read, never modified, so one model's config can be
    shared by every call.
    """
    import diffusers

    sampler = sampler_def(name, family=family)
    scheduler_class = getattr(diffusers, sampler.scheduler_class)
    config = scheduler_config(name, base_scheduler_config, family=family)
    # One base config (SDXL's Euler config, SD3's flow-match Euler config) serves every
    # scheduler of its family: keys a class does not take are dropped here rather than
    # passed on, where diffusers would ignore them with a warning on every call.
    accepted = inspect.signature(scheduler_class.__init__).parameters
    return scheduler_class.from_config({k: v for k, v in config.items() if k in accepted})
