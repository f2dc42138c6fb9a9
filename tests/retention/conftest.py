"""Servers of their own for deletion and retention: one whose worker purges quickly, one with no worker
at all (so a job stays queued for as long as a test needs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import LiveServer, bootstrap_admin, make_settings, start_server


@pytest.fixture(scope="module")
def purging(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service with its worker, purging retention every 0.2 s (it runs in the worker's 5 s sweep)."""
    server = start_server(make_settings(pg_factory(), tmp_path_factory.mktemp("purging"), demo_model_dir,
                                        retention_purge_interval_seconds=0.2, webhook_allow_private=True))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idle(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The API without any worker: what it accepts stays queued."""
    server = start_server(make_settings(pg_factory(), tmp_path_factory.mktemp("idle"), demo_model_dir),
                          embedded_worker=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def purging_admin(purging: LiveServer) -> str:
    return bootstrap_admin(purging.settings)


@pytest.fixture(scope="module")
def idle_admin(idle: LiveServer) -> str:
    return bootstrap_admin(idle.settings)


@pytest.fixture
def pclient(purging: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=purging.url, timeout=120) as c:
        yield c


@pytest.fixture
def iclient(idle: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=idle.url, timeout=60) as c:
        yield c
