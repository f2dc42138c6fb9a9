"""Models marked to load at start are resident before the worker reports ready; others load on demand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import make_settings, start_server
from sqlalchemy import create_engine, text

from app.config import ModelSpec
from app.db import sync_url

MODEL = """
[[models]]
name = "{name}"
path = "{path}"
min_width = 64
min_height = 64
defaults = {{ steps = 1, width = 64, height = 64 }}
{extra}
"""


def test_preload_defaults_to_whether_the_model_is_compiled() -> None:
    base = {"name": "m", "path": "/models/m"}
    assert ModelSpec.model_validate(base).loads_at_start is False
    assert ModelSpec.model_validate({**base, "compile": True}).loads_at_start is True
    assert ModelSpec.model_validate({**base, "compile": True, "preload": False}).loads_at_start is False
    assert ModelSpec.model_validate({**base, "preload": True}).loads_at_start is True


@pytest.mark.parametrize("missing_one", [False, True], ids=["all-loadable", "one-unloadable"])
def test_the_worker_is_ready_only_with_its_preloaded_models_resident(
    missing_one: bool, pg_factory, demo_model_dir: Path, tmp_path: Path
) -> None:
    models = [("eager", demo_model_dir, "preload = true"), ("lazy", demo_model_dir, "")]
    if missing_one:
        # A model that cannot load is reported and skipped; the worker still comes up with the others.
        models.append(("broken", tmp_path / "nowhere", "preload = true"))
    models_file = tmp_path / "models.toml"
    models_file.write_text("".join(MODEL.format(name=n, path=p, extra=e) for n, p, e in models))
    url = pg_factory()
    server = start_server(make_settings(url, tmp_path, demo_model_dir, models_file=models_file))
    engine = create_engine(sync_url(url))
    try:
        deadline = time.monotonic() + 60
        while True:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT state, models FROM workers")).first()
            if row is not None and row.state == "ready":
                break
            assert time.monotonic() < deadline, f"worker never became ready: {row}"
            time.sleep(0.1)
        assert row.models == ["eager"]
    finally:
        server.stop()
        engine.dispose()
