"""A deployment with LoRAs in its models file: the demo LoRA (kohya layout, as Civitai ships them), one
for another model family, one under a licence that forbids paid plans, one whose trigger word the
operator blocks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import LiveServer

from app.config import demo_lora_path

BLOCKED_TRIGGER = "qwerblax"


def write_lora_models_file(directory: Path, demo_model_dir: Path) -> Path:
    lora = demo_lora_path(demo_model_dir)
    path = directory / "models.toml"
    path.write_text(f'''[[models]]
name = "demo"
path = "{demo_model_dir}"
license = "open"
min_width = 64
min_height = 64
defaults = {{ steps = 2, width = 64, height = 64 }}

[[licenses]]
id = "open"
name = "Open"

[[licenses]]
id = "no-resale"
name = "Non-commercial LoRA licence"
monetization_allowed = false

[[loras]]
name = "demo-style"
path = "{lora}"
family = "sdxl"
default_weight = 1.0
trigger_words = ["demostyle"]
license = "open"
description = "The demo LoRA"

[[loras]]
name = "sd3-thing"
path = "{lora}"
family = "sd3"

[[loras]]
name = "hobby-only"
path = "{lora}"
family = "sdxl"
license = "no-resale"

[[loras]]
name = "edgy"
path = "{lora}"
family = "sdxl"
trigger_words = ["{BLOCKED_TRIGGER}"]
''')
    return path


@dataclass
class LoraDeployment:
    server: LiveServer
    admin_key: str
