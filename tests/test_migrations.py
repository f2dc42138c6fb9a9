"""`alembic upgrade head` produces exactly what the models declare, on Postgres and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

import app.models  # noqa: F401
from app.db import Base, sync_url
from app.migrate import upgrade_head


def _diff(url: str) -> list[object]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def migrated_url(request, pg_factory, tmp_path: Path) -> str:
    if request.param == "postgres":
        return pg_factory()
    url = f"sqlite+aiosqlite:///{tmp_path / 'ponyserve.db'}"
    upgrade_head(url)
    return url


def test_migrations_match_models(migrated_url: str) -> None:
    assert _diff(migrated_url) == []


def test_free_plan_is_seeded(migrated_url: str) -> None:
    engine = create_engine(sync_url(migrated_url))
    with engine.connect() as conn:
        codes = set(conn.execute(text("SELECT code FROM plans")).scalars())
    engine.dispose()
    assert {"free", "internal"} <= codes


def test_upgrade_is_idempotent(migrated_url: str) -> None:
    upgrade_head(migrated_url)
    assert _diff(migrated_url) == []
