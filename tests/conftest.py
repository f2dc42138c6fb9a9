"""Fixtures shared by every test: a throwaway Postgres database migrated to head, the demo
model written once, and a live server (uvicorn in a thread, embedded worker) on top.

Postgres is required: without it the suite fails at the first fixture instead of
silently skipping what matters most.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from harness import Customer, LiveServer, make_settings, new_customer, start_server
from sqlalchemy import Engine, create_engine

from app.db import sync_url
from app.migrate import upgrade_head

ADMIN_URL = os.environ.get("PONYSERVE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_factory() -> Iterator[callable]:  # type: ignore[valid-type]
    """Creates fresh, migrated Postgres databases; drops them all at the end of the run."""
    created: list[str] = []
    try:
        admin = psycopg.connect(_libpq(ADMIN_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.exit(f"Postgres is not reachable at {ADMIN_URL}: {exc}. Start it (see README) — "
                    "the suite does not run without it.", returncode=3)

    def make(migrate: bool = True) -> str:
        name = f"ponyserve_test_{secrets.token_hex(4)}"
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = _database_url(name)
        if migrate:
            upgrade_head(url)
        return url

    yield make
    for name in created:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def pg_url(pg_factory) -> str:  # type: ignore[no-untyped-def]
    return pg_factory()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(pg_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.runtime.demo_model import write_demo_model

    path = tmp_path_factory.mktemp("models") / "demo"
    write_demo_model(path)
    return path


@pytest.fixture(scope="session")
def live(pg_url: str, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service on Postgres with its embedded worker, shared by the end-to-end tests."""
    server = start_server(make_settings(pg_url, tmp_path_factory.mktemp("var"), demo_model_dir))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_key(live: LiveServer) -> str:
    import asyncio

    from app.cli import _bootstrap

    token = asyncio.run(_bootstrap(live.settings))
    assert token is not None
    return token


@pytest.fixture(scope="session")
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=120) as c:
        yield c


@pytest.fixture
def customer(client: httpx.Client, admin_key: str) -> Customer:
    """A fresh account with a generate-scoped key, made through the admin API."""
    return new_customer(client, admin_key)




@pytest.fixture
def make_customer(client: httpx.Client, admin_key: str):  # type: ignore[no-untyped-def]
    def make(plan: str = "free", scopes: tuple[str, ...] = ("generate",)) -> Customer:
        return new_customer(client, admin_key, plan=plan, scopes=scopes)

    return make
