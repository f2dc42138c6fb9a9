"""Looking behind the API in retention tests: the files a server stored, and its database rows."""

from __future__ import annotations

from pathlib import Path

from harness import LiveServer
from sqlalchemy import create_engine, text

from app.db import sync_url


def stored(server: LiveServer) -> list[Path]:
    root = server.settings.resolved_images_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def sql(server: LiveServer, query: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(sync_url(server.settings.database_url))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query), params).all()]
    finally:
        engine.dispose()
