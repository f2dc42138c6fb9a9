"""The batch window: a worker holds a batch with room for companions that arrive within it."""

from __future__ import annotations

from pathlib import Path

import httpx
from harness import bootstrap_admin, make_settings, new_customer, start_server, wait_jobs_finished
from sqlalchemy import create_engine, text

from app.db import sync_url

BODY = {"prompt": "a pony", "size": "64x64", "steps": 3, "sampler": "Euler", "guidance_scale": 5.0}


def _submit(client: httpx.Client, headers: dict[str, str], **extra: object) -> str:
    r = client.post("/v1/generations", headers=headers, json={**BODY, **extra})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_companions_arriving_within_the_window_share_the_first_jobs_pipeline_call(
    pg_factory, demo_model_dir: Path, tmp_path: Path
) -> None:
    url = pg_factory()
    # A long window, so that the HTTP round trips of the later submissions land inside it.
    settings = make_settings(url, tmp_path, demo_model_dir, batch_window_ms=4000, max_batch_images=4)
    server = start_server(settings)
    engine = create_engine(sync_url(url))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cust = new_customer(client, bootstrap_admin(settings), plan="internal")
            # Warm the model so the window is not spent loading it.
            wait_jobs_finished(client, cust.headers, [_submit(client, cust.headers)])
            first = _submit(client, cust.headers, seed=1)
            other_key = _submit(client, cust.headers, seed=2, steps=4)
            companions = [_submit(client, cust.headers, seed=3), _submit(client, cust.headers, seed=4, n=2)]
            jobs = wait_jobs_finished(client, cust.headers, [first, other_key, *companions], timeout=120)
        assert {j["status"] for j in jobs} == {"succeeded"}
        with engine.connect() as conn:
            finished = dict(conn.execute(text("SELECT id, finished_at FROM jobs")).all())
            started = dict(conn.execute(text("SELECT id, started_at FROM jobs")).all())
        # One batch is committed in one transaction with one timestamp.
        assert finished[first] == finished[companions[0]] == finished[companions[1]]
        # A job with another batch key is not pulled in: it is claimed after the held batch.
        assert finished[other_key] != finished[first]
        assert started[other_key] > max(started[j] for j in (first, *companions))
    finally:
        server.stop()
        engine.dispose()


def test_a_full_batch_does_not_wait_for_the_window(pg_factory, demo_model_dir: Path, tmp_path: Path) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir, batch_window_ms=60_000 / 6, max_batch_images=2)
    server = start_server(settings)
    engine = create_engine(sync_url(url))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cust = new_customer(client, bootstrap_admin(settings), plan="internal")
            job = _submit(client, cust.headers, n=2)
            [done] = wait_jobs_finished(client, cust.headers, [job], timeout=60)
        assert done["status"] == "succeeded"
        with engine.connect() as conn:
            waited = conn.execute(text("SELECT finished_at - started_at FROM jobs WHERE id = :id"),
                                  {"id": job}).scalar_one()
        # The batch was full at once: nothing held it for the 10 s window.
        assert waited.total_seconds() < 8
    finally:
        server.stop()
        engine.dispose()
