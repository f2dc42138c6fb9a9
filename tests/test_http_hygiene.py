"""Security headers on every response, no-store on secrets, 401 challenges, and a 500 that is
logged once — with its request id and traceback text, and without row contents."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from harness import free_port, make_settings
from sqlalchemy import exc as sa_exc

from app.main import create_app
from app.observability.logging import configure_logging, safe_traceback

SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


def _assert_security_headers(r: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_every_kind_of_response_carries_security_headers(client) -> None:
    for r in (client.get("/healthz"), client.get("/nope"), client.get("/openapi.json"),
              client.post("/v1/generations", content=b"x" * (2 * 1024 * 1024))):
        _assert_security_headers(r)
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    docs = client.get("/docs")
    _assert_security_headers(docs)
    # The HTML pages run inline scripts (their CSP must allow them) but load nothing from elsewhere.
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline'" in csp and "default-src 'self'" in csp


def test_unauthenticated_answers_carry_a_bearer_challenge(client, customer) -> None:
    for r in (client.get("/v1/models"), client.get("/v1/models", headers={"Authorization": "Bearer sk-nope"}),
              client.get("/admin/accounts", headers={"Authorization": "Bearer sk-nope"})):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="ponyserve"'
        assert r.json()["error"]["type"] == "authentication_error"


def test_secrets_are_never_cached(client, admin_key) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    acct = client.post("/admin/accounts", json={"name": "cache-check", "plan": "free"}, headers=auth)
    key = client.post(f"/admin/accounts/{acct.json()['id']}/keys", json={"name": "k", "scopes": ["generate"]},
                      headers=auth)
    assert key.status_code == 201 and key.json()["key"]
    assert key.headers["cache-control"] == "no-store"
    assert client.get("/admin/accounts", headers=auth).headers["cache-control"] == "no-store"
    assert client.get("/v1/usage", headers={"Authorization": f"Bearer {key.json()['key']}"}
                      ).headers["cache-control"] == "no-store"


def test_image_bytes_keep_their_own_caching(client, customer) -> None:
    r = client.post("/v1/images/generations", headers=customer.headers,
                    json={"prompt": "a pony", "size": "64x64", "steps": 1, "response_format": "url"})
    assert r.status_code == 200, r.text
    image = client.get(r.json()["data"][0]["url"])
    assert image.status_code == 200
    assert image.headers["cache-control"] == "private, max-age=3600"
    _assert_security_headers(image)


# -- the 500 ------------------------------------------------------------------------------------

ROW_SECRET = "victim@example.com"


def _raise_database_bug() -> None:
    orig = Exception(f'duplicate key value violates unique constraint "accounts_email"\n'
                     f"DETAIL:  Key (email)=({ROW_SECRET}) already exists.")
    raise sa_exc.IntegrityError("INSERT INTO accounts (email) VALUES (%(email)s)", {"email": ROW_SECRET}, orig)


@pytest.fixture
def broken_server(pg_url: str, tmp_path: Path, demo_model_dir: Path, capfd: pytest.CaptureFixture[str]
                  ) -> Iterator[str]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging(json=True)
    app = create_app(make_settings(pg_url, tmp_path, demo_model_dir), embedded_worker=False)

    async def boom() -> None:
        _raise_database_bug()

    app.add_api_route("/boom", boom)
    port = free_port()
    # As `ponyserve serve` runs it: uvicorn's own loggers reach our handler.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_500_is_logged_once_with_request_id_and_traceback_text(broken_server, capfd) -> None:
    capfd.readouterr()
    r = httpx.get(f"{broken_server}/boom", headers={"X-Request-ID": "rid-boom-1"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert r.headers["x-request-id"] == "rid-boom-1"
    _assert_security_headers(r)
    time.sleep(0.3)  # the server thread's last lines
    err = capfd.readouterr().err
    records = _records(err)
    errors = [rec for rec in records if rec.get("level") in ("error", "critical")]
    assert len(errors) == 1, errors
    record = errors[0]
    assert record["request_id"] == "rid-boom-1"
    tb = record["exception"]
    assert isinstance(tb, str)
    assert "Traceback (most recent call last)" in tb and "_raise_database_bug" in tb
    assert "IntegrityError" in tb and "duplicate key value" in tb
    assert "[parameters:" not in err and ROW_SECRET not in err and "traceback object at" not in err
    # The request log line still sees the 500, under the same request id.
    assert any(rec.get("event") == "request" and rec.get("status") == 500 and rec.get("request_id") == "rid-boom-1"
               for rec in records)


def test_log_lines_carry_no_ansi_colour(broken_server, capfd) -> None:
    logging.getLogger("uvicorn.error").info("plain %s", "text", extra={"color_message": "\x1b[1mplain\x1b[0m %s"})
    err = capfd.readouterr().err
    assert "plain text" in err
    assert "\x1b[" not in err and "\\u001b" not in err and "color_message" not in err


def test_safe_traceback_keeps_frames_and_drops_details() -> None:
    try:
        try:
            _raise_database_bug()
        except sa_exc.IntegrityError as exc:
            raise RuntimeError("settling failed") from exc
    except RuntimeError as exc:
        text = safe_traceback(exc)
    assert "_raise_database_bug" in text and "RuntimeError: settling failed" in text
    assert "sqlalchemy.exc.IntegrityError" in text
    assert ROW_SECRET not in text and "[SQL:" not in text and "DETAIL" not in text
