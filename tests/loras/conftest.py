"""Fixtures of the LoRA tests: one deployment (see lora_deploy.py) per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import bootstrap_admin, make_settings, start_server
from lora_deploy import BLOCKED_TRIGGER, LoraDeployment, write_lora_models_file


@pytest.fixture(scope="module")
def lora_deploy(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoraDeployment]:
    directory = tmp_path_factory.mktemp("loras")
    block = directory / "block.txt"
    block.write_text(f"{BLOCKED_TRIGGER}\n")
    settings = make_settings(pg_factory(), directory, demo_model_dir,
                             models_file=write_lora_models_file(directory, demo_model_dir),
                             moderation_block_files=[block])
    admin = bootstrap_admin(settings)
    server = start_server(settings)
    yield LoraDeployment(server=server, admin_key=admin)
    server.stop()


@pytest.fixture
def lclient(lora_deploy: LoraDeployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lora_deploy.server.url, timeout=120) as c:
        yield c
