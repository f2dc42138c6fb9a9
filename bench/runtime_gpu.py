"""GPU throughput of the runtime on a full-size SDXL architecture (random weights), eager and compiled.

Builds SDXL base 1.0's real architecture in code (2.6B-parameter UNet, the VAE,
CLIP-L and OpenCLIP-G with the bundled tokenizer vocabulary) with random weights,
directly on the GPU in bfloat16, and serves it through the same runtime path a
real checkpoint takes (``prepare_model``: VAE dtype, channels_last, optional
torch.compile with batch buckets). Then measures, at 1024x1024 and 30 steps:

- denoising it/s at batch 1 (one iteration = one UNet call on the guided batch of 2),
  eager and compiled;
- images/s for whole calls (text encoding, denoising, VAE decode) at batch 1/2/4/8;
- peak GPU memory per batch size (``torch.cuda.max_memory_allocated``);
- how long compiling and warming the buckets took;
- with ``--served N``: the same model written to disk as a diffusers folder and served by
  ``ponyserve serve`` (embedded worker, SQLite: the GPU host needs no Postgres) to
  ``--clients`` concurrent callers of ``POST /v1/images/generations`` until N images are
  delivered, and that throughput over the raw pipeline's best batch size.

Random weights make noise images; the arithmetic, and so the timing, is a real
SDXL model's. Prints one JSON object. Needs a CUDA GPU; exits with status 2 on a
machine without one. ``--tiny`` swaps in the tiny demo model and allows ``--device cpu``,
to check the script itself on a machine without a GPU (its figures mean nothing).

Usage: python bench/runtime_gpu.py [--steps 30] [--size 1024] [--batch-sizes 1,2,4,8]
                                   [--compile-mode default] [--no-compile] [--served 48 --clients 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from app.config import ModelDefaults, ModelSpec
from app.runtime.acceleration import attention_processor_names
from app.runtime.pipelines import LoadedModel, prepare_model
from app.runtime.types import GenerationParams, ImagePrompt

PROMPT = "score_9, score_8_up, a pony in a meadow at sunset, detailed background"
NEGATIVE = "lowres, blurry"


def _fail(message: str) -> NoReturn:
    print(f"runtime_gpu: {message}", file=sys.stderr)
    raise SystemExit(2)


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def build_random_sdxl(device: str) -> Any:
    """StableDiffusionXLPipeline with SDXL base 1.0's configs and random weights, bf16 on ``device``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from app.runtime.demo_model import SDXL_SCHEDULER_CONFIG
    from app.runtime.single_file import SDXL_BASE_CONFIGS, sdxl_clip_tokenizers

    def config(name: str) -> dict[str, Any]:
        skip = {"architectures", "model_type"}
        return {k: v for k, v in SDXL_BASE_CONFIGS[name].items() if not k.startswith("_") and k not in skip}

    tokenizer, tokenizer_2 = sdxl_clip_tokenizers()
    torch.manual_seed(0)
    # Initialising 3.5B parameters on the GPU takes seconds; on the CPU, minutes.
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(config("unet/config.json"))
        vae = AutoencoderKL.from_config(config("vae/config.json"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**config("text_encoder/config.json")))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2/config.json")))
    modules = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    for module in modules.values():
        module.to(dtype=torch.bfloat16).eval()
    return StableDiffusionXLPipeline(
        **modules,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        add_watermarker=False,
    )


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def build_tiny(work: Path, device: str) -> Any:
    """The tiny random demo pipeline (for ``--tiny`` smoke runs), in bfloat16 on ``device``."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from app.runtime.demo_model import write_demo_model

    write_demo_model(work / "tiny")
    pipe = StableDiffusionXLPipeline.from_pretrained(work / "tiny", dtype=torch.bfloat16, local_files_only=True)
    return pipe.to(device)


def served_throughput(
    pipe: Any, spec: ModelSpec, args: argparse.Namespace, work: Path, best_raw_images_per_s: float
) -> dict[str, Any]:
    """Writes ``pipe`` as a diffusers folder, serves it with ``ponyserve serve`` and drives it with clients."""
    from _service import drive_clients, running_service

    folder = work / "model"
    started = time.perf_counter()
    pipe.save_pretrained(folder, safe_serialization=True)
    write_seconds = time.perf_counter() - started
    models_file = work / "models.toml"
    sizes = ", ".join(str(b) for b in spec.compile_batch_sizes)
    models_file.write_text(
        f"""[[models]]
name = "bench"
family = "sdxl"
path = "{folder}"
dtype = "bfloat16"
max_steps = {spec.max_steps}
min_width = 64
min_height = 64
compile = {"true" if spec.compile else "false"}
compile_mode = "{spec.compile_mode}"
compile_batch_sizes = [{sizes}]
allowed_sizes = ["{args.size}x{args.size}"]
[models.defaults]
steps = {args.steps}
guidance_scale = {args.guidance}
sampler = "{args.sampler}"
width = {args.size}
height = {args.size}
"""
    )
    body = {"model": "bench", "prompt": PROMPT, "negative_prompt": NEGATIVE, "size": f"{args.size}x{args.size}",
            "steps": args.steps, "guidance_scale": args.guidance, "sampler": args.sampler,
            "response_format": "b64_json"}
    env = {"PONYSERVE_MODELS_FILE": str(models_file), "PONYSERVE_DEVICE": args.device,
           "PONYSERVE_MAX_BATCH_IMAGES": str(max(spec.compile_batch_sizes)),
           "PONYSERVE_BATCH_WINDOW_MS": str(args.batch_window_ms), "PONYSERVE_MAX_WAIT_SECONDS": "1800"}
    database = f"sqlite+aiosqlite:///{work / 'var' / 'ponyserve.db'}"
    (work / "var").mkdir(exist_ok=True)
    started = time.perf_counter()
    # A compiled model is loaded, compiled and warmed before the worker reports ready.
    with running_service(database, work / "var", folder, ready_timeout=1800, **env) as (base, admin):
        ready_seconds = time.perf_counter() - started
        import httpx
        from _service import customer_key

        key = customer_key(base, admin)
        started = time.perf_counter()
        # Compiled, the model is resident already; eager, the worker loads it on this first job.
        r = httpx.post(f"{base}/v1/images/generations", json={**body, "seed": 0}, timeout=1800,
                       headers={"Authorization": f"Bearer {key}"})
        if r.status_code != 200:
            raise RuntimeError(f"warm-up generation failed: {r.status_code} {r.text}")
        warm_seconds = time.perf_counter() - started
        images_per_s, latencies = drive_clients(base, key, body, args.served, args.clients)
    ordered = sorted(latencies)
    return {
        "layout": "ponyserve serve, embedded worker, SQLite",
        "images": args.served,
        "clients": args.clients,
        "batch_window_ms": args.batch_window_ms,
        "model_write_seconds": round(write_seconds, 1),
        "ready_seconds": round(ready_seconds, 1),
        "first_request_seconds": round(warm_seconds, 1),
        "images_per_s": round(images_per_s, 3),
        "latency_p50_s": round(ordered[len(ordered) // 2], 3),
        "ratio_served_over_raw_best": round(images_per_s / best_raw_images_per_s, 3),
    }


def denoising_its(model: LoadedModel, params: GenerationParams) -> float:
    """UNet iterations per second at batch 1, from per-step timestamps (first step and VAE excluded)."""
    stamps: list[float] = []

    def on_step(done: int, total: int) -> bool:
        _sync()
        stamps.append(time.perf_counter())
        return True

    model.generate(params, [ImagePrompt(PROMPT, NEGATIVE, 1)], on_step=on_step)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def throughput(model: LoadedModel, params: GenerationParams, batch_sizes: list[int]) -> list[dict[str, Any]]:
    import torch

    rows = []
    warm = GenerationParams(params.width, params.height, 2, params.guidance_scale, params.sampler)
    for batch in batch_sizes:
        images = [ImagePrompt(PROMPT, NEGATIVE, seed) for seed in range(batch)]
        # A first call at a new shape pays for cuDNN's algorithm search; keep it out of the timing.
        model.generate(warm, images)
        _sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        model.generate(params, images)
        _sync()
        seconds = time.perf_counter() - started
        rows.append(
            {
                "batch": batch,
                "runs_as_batch": model.bucket_for(batch),
                "seconds": round(seconds, 3),
                "images_per_s": round(batch / seconds, 3),
                "peak_memory_gib": _peak_memory_gib(),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=7.0)
    ap.add_argument("--sampler", default="Euler a")
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
    )
    ap.add_argument("--no-compile", action="store_true", help="measure eager only")
    ap.add_argument("--served", type=int, default=0, help="images to serve through the API (0: skip)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--batch-window-ms", type=float, default=0.0)
    ap.add_argument("--tiny", action="store_true", help="the tiny demo model, CPU allowed: checks the script only")
    args = ap.parse_args()
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})

    try:
        import torch
    except ImportError:
        _fail("torch is not installed")
    if not args.tiny:
        if not args.device.startswith("cuda"):
            _fail(f"this benchmark measures CUDA GPUs; --device {args.device} is not one")
        if not torch.cuda.is_available():
            built = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
            _fail(f"no CUDA GPU is available ({built}); run it on a GPU host")
        torch.cuda.set_device(torch.device(args.device))
    import diffusers

    work = Path(tempfile.mkdtemp(prefix="ponyserve-gpu-bench-"))
    started = time.perf_counter()
    pipe = build_tiny(work, args.device) if args.tiny else build_random_sdxl(args.device)
    build_seconds = time.perf_counter() - started
    spec = ModelSpec(
        name="sdxl-random",
        path=Path("random-weights"),
        dtype="bfloat16",
        defaults=ModelDefaults(
            steps=args.steps,
            guidance_scale=args.guidance,
            sampler=args.sampler,
            width=args.size,
            height=args.size,
        ),
        max_steps=max(60, args.steps),
        min_width=64,
        min_height=64,
        compile_batch_sizes=batch_sizes,
        compile_mode=args.compile_mode,
    )
    params = GenerationParams(args.size, args.size, args.steps, args.guidance, args.sampler)

    eager = prepare_model(spec, pipe, args.device)
    result: dict[str, Any] = {
        "benchmark": "runtime_gpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(args.device).total_memory / 2**30, 1)
            if torch.cuda.is_available() else None,
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "diffusers": diffusers.__version__,
        },
        "model": {
            "architecture": "tiny demo model (smoke run)" if args.tiny else "SDXL base 1.0 (random weights)",
            "dtype": "bfloat16",
            "unet_params": _count(pipe.unet),
            "vae_params": _count(pipe.vae),
            "text_encoder_params": _count(pipe.text_encoder) + _count(pipe.text_encoder_2),
            "weights_gib": round(eager.memory_bytes / 2**30, 2),
            "attention_processors": sorted(attention_processor_names(pipe, eager.adapter)),
            "unet_channels_last": pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last),
            "build_seconds": round(build_seconds, 1),
        },
        "settings": {
            "size": f"{args.size}x{args.size}",
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "sampler": args.sampler,
            "batch_sizes": batch_sizes,
        },
    }
    denoising_its(eager, GenerationParams(args.size, args.size, 3, args.guidance, args.sampler))
    result["eager"] = {
        "batch1_it_per_s": round(denoising_its(eager, params), 3),
        "batches": throughput(eager, params, batch_sizes),
    }
    if not args.no_compile:
        started = time.perf_counter()
        compiled = prepare_model(spec.model_copy(update={"compile": True}), pipe, args.device)
        result["compiled"] = {
            "mode": args.compile_mode,
            "compile_and_warm_up_seconds": round(time.perf_counter() - started, 1),
            "batch1_it_per_s": round(denoising_its(compiled, params), 3),
            "batches": throughput(compiled, params, batch_sizes),
        }
        result["compiled"]["batch1_speedup"] = round(
            result["compiled"]["batch1_it_per_s"] / result["eager"]["batch1_it_per_s"], 3
        )
    if args.served:
        mode = "eager" if args.no_compile else "compiled"
        best = max(row["images_per_s"] for row in result[mode]["batches"])
        served_spec = spec if args.no_compile else spec.model_copy(update={"compile": True})
        result["served"] = {"mode": mode, "raw_best_images_per_s": best,
                            **served_throughput(pipe, served_spec, args, work, best)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
