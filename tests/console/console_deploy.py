"""The console tests' deployment: a capped licence on the demo model and a fake output classifier
(fixed score, loaded through the real loader) so there are images to review."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import Customer, LiveServer, new_customer
from sqlalchemy import Engine

# Above the default review threshold (0.8): images of accounts left at the default are withheld.
FAKE_SCORE = 0.9

MODELS_TOML = """
[[licenses]]
id = "community"
name = "Community licence"
monthly_image_cap = 200
annual_revenue_cap_usd = 1000000

[[models]]
name = "demo"
path = "{path}"
license = "community"
min_width = 64
min_height = 64
[models.defaults]
width = 64
height = 64
steps = 2
"""


def write_fake_classifier(directory: Path, score: float = FAKE_SCORE) -> Path:
    """A torch.export program giving every image the same score, saved like an operator's classifier."""
    import torch

    class FixedScore(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("score", torch.tensor(score))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.score + images.mean(dim=(1, 2, 3)) * 0.0

    example = torch.zeros(2, 3, 32, 32)
    program = torch.export.export(FixedScore(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = directory / "fake_classifier.pt2"
    torch.export.save(program, str(path))
    return path


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Console:
    server: LiveServer
    admin_key: str
    admin_key_id: str
    moderator_key: str
    moderator_key_id: str
    engine: Engine

    @property
    def url(self) -> str:
        return self.server.url

    def customer(self, client: httpx.Client, *, withheld: bool = False) -> Customer:
        """A partner with a generate key; its images are delivered, or withheld for review."""
        cust = new_customer(client, self.admin_key)
        if not withheld:
            # 1.0: the classifier's 0.9 never exceeds it.
            r = client.patch(f"/admin/accounts/{cust.account_id}", json={"review_threshold": 1.0},
                             headers=auth(self.admin_key))
            assert r.status_code == 200, r.text
        return cust
