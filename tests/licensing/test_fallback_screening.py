"""A job a licence cap reroutes to its fallback model is moderated again for that model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from sqlalchemy import create_engine, text

from app.db import sync_url

# Allowed on a model that cannot make NSFW images, refused by the CSAM guard on one that can.
SUGGESTIVE_WITH_YOUTH = "child, bikini, beach"

MODELS = """
[[licenses]]
id = "one-then-fallback"
name = "One a month, then the NSFW-capable model"
monthly_image_cap = 1
at_cap = "fallback"
fallback_model = "nsfw-open"

[[licenses]]
id = "open"
name = "Open"

[[models]]
name = "sfw-capped"
path = "{path}"
license = "one-then-fallback"
min_width = 64
min_height = 64
defaults = {{ steps = 1, width = 64, height = 64 }}

[[models]]
name = "nsfw-open"
path = "{path}"
license = "open"
nsfw_capable = true
min_width = 64
min_height = 64
defaults = {{ steps = 1, width = 64, height = 64 }}
"""


@pytest.fixture(scope="module")
def deployment(pg_factory, demo_model_dir: Path, tmp_path_factory) -> Iterator[tuple[LiveServer, str, str]]:
    directory = tmp_path_factory.mktemp("fallback-screening")
    models_file = directory / "models.toml"
    models_file.write_text(MODELS.format(path=demo_model_dir))
    url = pg_factory()
    settings = make_settings(url, directory, demo_model_dir, models_file=models_file)
    admin = bootstrap_admin(settings)
    server = start_server(settings)
    yield server, admin, url
    server.stop()


def test_a_prompt_the_fallback_model_may_not_take_is_refused_when_the_cap_reroutes_it(deployment) -> None:
    server, admin, url = deployment
    with httpx.Client(base_url=server.url, timeout=60) as client:
        cust = new_customer(client, admin, plan="internal")
        body = {"model": "sfw-capped", "prompt": SUGGESTIVE_WITH_YOUTH}
        first = client.post("/v1/generations", headers=cust.headers, json=body)
        assert first.status_code == 202, first.text
        assert first.json()["parameters"]["model"] == "sfw-capped"

        # The cap is reached: this one would run on the NSFW-capable fallback, which may not take it.
        rerouted = client.post("/v1/generations", headers=cust.headers, json=body)
        assert rerouted.status_code == 400, rerouted.text
        assert rerouted.json()["error"]["code"] == "content_policy_violation"

        benign = client.post("/v1/generations", headers=cust.headers, json={**body, "prompt": "a pony in a meadow"})
        assert benign.status_code == 202, benign.text
        assert benign.json()["parameters"]["model"] == "nsfw-open"

        incidents = client.get("/admin/moderation/incidents", params={"account_id": cust.account_id},
                               headers={"Authorization": f"Bearer {admin}"}).json()["data"]
    assert [i["model"] for i in incidents] == ["nsfw-open"]
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            jobs = conn.execute(text("SELECT model FROM jobs WHERE account_id = :a ORDER BY created_at"),
                                {"a": cust.account_id}).scalars().all()
            reserved = conn.execute(text("SELECT coalesce(sum(used + reserved), 0) FROM license_usage_daily "
                                         "WHERE license_id = 'open'")).scalar_one()
    finally:
        engine.dispose()
    # The refused request left no job and no reservation on the fallback's licence.
    assert jobs == ["sfw-capped", "nsfw-open"]
    assert reserved == 1
