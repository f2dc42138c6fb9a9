"""One moderated deployment shared by the moderation flow tests: its own database, a models
file with a Pony-style model, an operator block list and a fake output classifier."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from harness import Customer, LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from moderation_deploy import (
    MAX_PROMPT_CHARS,
    auth,
    write_block_file,
    write_fake_classifier,
    write_models_file,
)
from sqlalchemy import Engine, create_engine

from app.db import sync_url


@dataclass
class Deployment:
    server: LiveServer
    admin_key: str
    moderator_key: str
    engine: Engine

    def customer(self, client: httpx.Client, *, max_rating: str | None = None,
                 review_threshold: float | None = None) -> Customer:
        cust = new_customer(client, self.admin_key)
        patch: dict[str, object] = {}
        if max_rating is not None:
            patch["max_rating"] = max_rating
        if review_threshold is not None:
            patch["review_threshold"] = review_threshold
        if patch:
            r = client.patch(f"/admin/accounts/{cust.account_id}", json=patch, headers=auth(self.admin_key))
            assert r.status_code == 200, r.text
        return cust


@pytest.fixture(scope="session")
def moderated(pg_factory, demo_model_dir, tmp_path_factory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("moderated")
    url = pg_factory()
    settings = make_settings(
        url, directory, demo_model_dir,
        models_file=write_models_file(directory, demo_model_dir),
        moderation_block_files=[write_block_file(directory)],
        moderation_classifier=write_fake_classifier(directory),
        moderation_classifier_input_size=32,
        max_prompt_chars=MAX_PROMPT_CHARS,
    )
    admin = bootstrap_admin(settings)
    server = start_server(settings)
    engine = create_engine(sync_url(url))
    with httpx.Client(base_url=server.url, timeout=60) as c:
        operator = c.get("/admin/accounts", headers=auth(admin)).json()["data"][0]["id"]
        key = c.post(f"/admin/accounts/{operator}/keys", json={"name": "moderator", "scopes": ["moderator"]},
                     headers=auth(admin))
        assert key.status_code == 201, key.text
    yield Deployment(server=server, admin_key=admin, moderator_key=key.json()["key"], engine=engine)
    server.stop()
    engine.dispose()


@pytest.fixture(scope="session")
def mclient(moderated: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=moderated.server.url, timeout=60) as c:
        yield c
