"""The embedded default (`make run`): SQLite under the data dir, same code paths, bootstrap key once."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import httpx
from harness import make_settings, new_customer, start_server
from PIL import Image
from sqlalchemy import create_engine, text

from app.cli import _bootstrap
from app.db import sync_url
from app.migrate import upgrade_head


def test_embedded_sqlite_service_generates_and_meters(tmp_path: Path, demo_model_dir: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'ponyserve.db'}"
    upgrade_head(url)
    settings = make_settings(url, tmp_path / "var", demo_model_dir)
    admin = asyncio.run(_bootstrap(settings))
    assert admin is not None
    assert asyncio.run(_bootstrap(settings)) is None, "the bootstrap key is printed once, never again"

    server = start_server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            cust = new_customer(client, admin)
            r = client.post("/v1/images/generations", headers=cust.headers,
                            json={"prompt": "a pony", "size": "64x64", "steps": 2, "n": 2, "seed": 5,
                                  "response_format": "b64_json"})
            assert r.status_code == 200, r.text
            images = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in r.json()["data"]]
            assert [im.size for im in images] == [(64, 64), (64, 64)]
            job = client.post("/v1/generations", headers={**cust.headers, "Prefer": "wait=60"},
                              json={"prompt": "a pony", "size": "64x64", "steps": 2})
            assert job.status_code == 200
            assert job.json()["status"] == "succeeded"
    finally:
        server.stop()
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM usage_ledger")).scalar() == 3
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'succeeded'")).scalar() == 2
    engine.dispose()
    assert any((tmp_path / "var" / "images").rglob("*.png"))
