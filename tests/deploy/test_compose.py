"""deploy/compose.yaml is a valid Compose file: `docker compose config` accepts it where a Compose
implementation is installed (the Compose plugin, or the older docker-compose)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from deploy_files import DEPLOY

COMPOSE_FILE = DEPLOY / "compose.yaml"


def _compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True,
                                             timeout=30).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_compose_accepts_the_file() -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("no Compose here: neither the docker CLI's compose plugin nor docker-compose is installed")
    done = subprocess.run([*compose, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_services_run_the_documented_commands() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert services["migrate"]["command"] == ["ponyserve", "migrate"]
    assert services["api"]["command"] == ["ponyserve", "serve", "--no-embedded-worker"]
    assert services["worker"]["command"][:2] == ["ponyserve", "worker"]
    # Neither starts against a schema the migration has not brought up to date.
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
