"""A deployment with licensed models: a models file, its own database and a live server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from harness import LiveServer, bootstrap_admin, make_settings, start_server
from licensed_models import write_models_file


@pytest.fixture(scope="module")
def licensed(pg_factory, demo_model_dir, tmp_path_factory) -> Iterator[tuple[LiveServer, str]]:
    directory = tmp_path_factory.mktemp("licensed")
    settings = make_settings(pg_factory(), directory, demo_model_dir,
                             models_file=write_models_file(directory, demo_model_dir))
    admin = bootstrap_admin(settings)
    server = start_server(settings)
    yield server, admin
    server.stop()


@pytest.fixture(scope="module")
def lclient(licensed) -> Iterator[httpx.Client]:
    server, _ = licensed
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
