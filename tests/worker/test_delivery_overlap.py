"""A batch's delivery (encoding, storage, completion) runs while the next batch generates."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from harness import bootstrap_admin, make_settings, new_customer, start_server, wait_jobs_finished
from sqlalchemy import create_engine, text

from app.db import sync_url
from app.runtime.encoding import encode_image
from app.worker import worker as worker_module

ENCODE_SECONDS = 1.5


def test_the_next_batch_starts_before_the_previous_one_is_delivered(
    pg_factory, demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_encode(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(ENCODE_SECONDS)
        return encode_image(*args, **kwargs)

    # The embedded worker runs in this process, so it encodes through the slow encoder.
    monkeypatch.setattr(worker_module, "encode_image", slow_encode)
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir, max_batch_images=1)
    server = start_server(settings)
    engine = create_engine(sync_url(url))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cust = new_customer(client, bootstrap_admin(settings), plan="internal")
            body = {"prompt": "a pony", "size": "64x64", "steps": 2}
            ids = []
            for seed in (1, 2):
                r = client.post("/v1/generations", headers=cust.headers, json={**body, "seed": seed})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            jobs = wait_jobs_finished(client, cust.headers, ids, timeout=120)
        assert {j["status"] for j in jobs} == {"succeeded"}
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(text("SELECT id, started_at, finished_at FROM jobs"))}
        first, second = sorted((rows[i] for i in ids), key=lambda r: r.started_at)
        # Without the overlap the second job would be claimed only after the first one's slow encoding.
        assert second.started_at < first.finished_at
        assert (first.finished_at - first.started_at).total_seconds() >= ENCODE_SECONDS
    finally:
        server.stop()
        engine.dispose()
