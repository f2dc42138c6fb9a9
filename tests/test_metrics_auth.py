"""/metrics: bearer token when configured, and a scrape that does no database work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import LiveServer, make_settings, start_server
from pydantic import SecretStr
from sqlalchemy import event


def test_metrics_want_the_token_when_one_is_set(live, client) -> None:
    live.settings.metrics_token = SecretStr("scrape-me")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2NyYXBlLW1l"}):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == 'Bearer realm="ponyserve"'
            assert r.json()["error"]["code"] == "invalid_metrics_token"
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200
        assert "ponyserve_queue_depth " in r.text
    finally:
        live.settings.metrics_token = None
    # Unset: open, for laptop use.
    assert client.get("/metrics").status_code == 200


@pytest.fixture
def quiet_server(pg_url: str, tmp_path: Path, demo_model_dir: Path) -> Iterator[LiveServer]:
    """No worker, and every other background reader slowed right down: only scrapes could issue SQL."""
    settings = make_settings(pg_url, tmp_path, demo_model_dir, metrics_refresh_seconds=3600,
                             moderation_optout_refresh_seconds=3600, webhook_poll_seconds=3600)
    server = start_server(settings, embedded_worker=False)
    yield server
    server.stop()


def test_scrapes_issue_no_sql(quiet_server: LiveServer) -> None:
    engine = quiet_server.server.config.app.state.db.engine.sync_engine
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with httpx.Client(base_url=quiet_server.url) as c:
        # The background task's first round runs at start-up; let it finish.
        deadline = time.monotonic() + 10
        while "ponyserve_queue_depth 0.0" not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the gauges were never refreshed"
            time.sleep(0.1)
        time.sleep(0.3)
        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(20):
                assert c.get("/metrics").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert statements == []
