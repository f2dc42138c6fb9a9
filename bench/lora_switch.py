"""What a LoRA costs a worker: its first load, switching between sets, and a call with it, in one run.

Loads the demo model through the real loading path (``load_model``), writes the demo LoRA (kohya
layout) and a second one beside it, then times through ``LoadedModel.generate``:

- ``plain_call_ms``: a call with no LoRA (the baseline), median of ``--repeats``;
- ``first_load_ms``: making a LoRA active the first time (``load_lora_weights``), mean of two LoRAs;
- ``switch_ms``: changing the active set to another loaded one (``set_adapters``), median of 3 × ``--repeats``;
- ``call_with_lora_ms``: a call with a LoRA active, median of ``--repeats``.
 Prints one JSON object. Usage:
  python bench/lora_switch.py [--size 64] [--steps 4] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from safetensors.torch import load_file, save_file

    from app.config import demo_lora_path, demo_model_spec
    from app.runtime.demo_model import write_demo_model
    from app.runtime.pipelines import load_model
    from app.runtime.types import GenerationParams, ImagePrompt, LoraUse

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "demo"
        write_demo_model(model_dir)
        first = demo_lora_path(model_dir)
        second = first.with_name("other.safetensors")
        save_file({k: v * 0.5 if "lora_up" in k else v for k, v in load_file(first).items()}, second)
        model = load_model(demo_model_spec(model_dir), args.device)
        images = [ImagePrompt("a pony", "", 1)]
        set_a = (LoraUse("a", str(first), 1.0, 1.0),)
        set_b = (LoraUse("b", str(second), 0.8, 0.8),)

        def call(loras: tuple[LoraUse, ...]) -> float:
            params = GenerationParams(width=args.size, height=args.size, steps=args.steps, guidance_scale=5.0,
                                      sampler="Euler a", loras=loras)
            started = time.perf_counter()
            model.generate(params, images)
            return (time.perf_counter() - started) * 1000

        def apply(loras: tuple[LoraUse, ...]) -> float:
            started = time.perf_counter()
            model.use_loras(loras)
            return (time.perf_counter() - started) * 1000

        call(())  # warm-up: first-call allocations are nobody's cost
        plain = statistics.median(call(()) for _ in range(args.repeats))
        first_load = statistics.mean((apply(set_a), apply(set_b)))
        switch = statistics.median(apply(set_a if i % 2 == 0 else set_b) for i in range(args.repeats * 3))
        with_set = statistics.median(call(set_b) for _ in range(args.repeats))

    print(json.dumps({
        "bench": "lora_switch", "device": args.device, "cpu": _cpu_model(),
        "date": datetime.now(UTC).date().isoformat(), "size": args.size, "steps": args.steps,
        "repeats": args.repeats, "plain_call_ms": round(plain, 1), "first_load_ms": round(first_load, 1),
        "switch_ms": round(switch, 2), "call_with_lora_ms": round(with_set, 1),
        "call_with_lora_over_plain": round(with_set / plain, 3),
    }, indent=1))


if __name__ == "__main__":
    main()
