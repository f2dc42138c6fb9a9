"""One deployment shared by the console tests: its own database and server (see console_deploy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_deploy import MODELS_TOML, Console, auth, write_fake_classifier
from harness import bootstrap_admin, make_settings, start_server
from sqlalchemy import create_engine

from app.db import sync_url


@pytest.fixture(scope="package")
def console(pg_factory, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
            ) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp("console")
    models = directory / "models.toml"
    models.write_text(MODELS_TOML.format(path=demo_model_dir))
    url = pg_factory()
    settings = make_settings(url, directory, demo_model_dir, models_file=models,
                             moderation_classifier=write_fake_classifier(directory),
                             moderation_classifier_input_size=32)
    admin = bootstrap_admin(settings)
    server = start_server(settings)
    engine = create_engine(sync_url(url))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            me = c.get("/v1/usage", headers=auth(admin)).json()
            key = c.post(f"/admin/accounts/{me['account_id']}/keys",
                         json={"name": "moderator", "scopes": ["moderator"]}, headers=auth(admin))
            assert key.status_code == 201, key.text
        yield Console(server=server, admin_key=admin, admin_key_id=me["key_id"], moderator_key=key.json()["key"],
                      moderator_key_id=key.json()["id"], engine=engine)
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture(scope="package")
def api(console: Console) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console.url, timeout=60) as c:
        yield c
