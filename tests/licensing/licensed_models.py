"""The models file of the licensing tests: five models under licences with different terms."""

from __future__ import annotations

from pathlib import Path

MODELS_TOML = """
[[licenses]]
id = "cap30"
name = "Thirty a month"
monthly_image_cap = 30

[[licenses]]
id = "capfb"
name = "Two a month, then the open model"
monthly_image_cap = 2
at_cap = "fallback"
fallback_model = "open"

[[licenses]]
id = "overage"
name = "Billed overage"
monthly_image_cap = 1
at_cap = "allow_overage"

[[licenses]]
id = "noncommercial"
name = "Non-commercial"
monetization_allowed = false

[[licenses]]
id = "open"
name = "Open"
url = "https://example.org/open-license"

{models}
"""

MODEL = """
[[models]]
name = "{name}"
path = "{path}"
license = "{license}"
prompt_prefix = "{prefix}"
min_width = 64
min_height = 64
[models.defaults]
width = 64
height = 64
steps = 1
"""


def write_models_file(directory: Path, demo_model_dir: Path) -> Path:
    models = "".join(MODEL.format(name=name, path=demo_model_dir, license=lic, prefix=name)
                     for name, lic in (("open", "open"), ("capped", "cap30"), ("capped-fb", "capfb"),
                                       ("over", "overage"), ("nc", "noncommercial")))
    path = directory / "models.toml"
    path.write_text(MODELS_TOML.format(models=models))
    return path
