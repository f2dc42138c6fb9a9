"""img2img inputs given as URLs: off by default; when the operator allows them, fetched with the webhook
guard (no loopback or private targets unless allowed, no redirects, size-limited)."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from harness import LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from PIL import Image


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving /pony.png, a redirect and a 404."""
    body = _png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/pony.png":
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("location", "/pony.png")
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def url_server(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_settings(pg_factory(), tmp_path_factory.mktemp("urls"), demo_model_dir,
                                        image_url_inputs=True, image_url_allow_private=True))
    yield server
    server.stop()


def _generate(client: httpx.Client, headers: dict[str, str], init: str) -> httpx.Response:
    return client.post("/v1/images/generations", headers=headers,
                       json={"prompt": "a pony", "steps": 4, "response_format": "b64_json", "init_image": init})


def test_urls_are_refused_unless_the_operator_allows_them(client: httpx.Client, customer, image_host: str) -> None:  # type: ignore[no-untyped-def]
    r = _generate(client, customer.headers, f"{image_host}/pony.png")
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("image_urls_disabled", "init_image")


def test_an_allowed_url_is_fetched_and_used(url_server: LiveServer, image_host: str) -> None:
    with httpx.Client(base_url=url_server.url, timeout=120) as c:
        me = new_customer(c, bootstrap_admin(url_server.settings))
        r = _generate(c, me.headers, f"{image_host}/pony.png")
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).size == (64, 64)
        for path, code in (("/moved", "image_url_unavailable"), ("/missing.png", "image_url_unavailable")):
            bad = _generate(c, me.headers, f"{image_host}{path}")
            assert bad.status_code == 400, bad.text
            assert (bad.json()["error"]["code"], bad.json()["error"]["param"]) == (code, "init_image")


@pytest.mark.asyncio
async def test_the_fetch_guard_refuses_private_and_plain_http_targets(image_host: str) -> None:
    from app.errors import InvalidRequest
    from app.generation.image_fetch import fetch

    for url in (f"{image_host}/pony.png", "https://127.0.0.1/pony.png", "https://169.254.169.254/latest/meta-data",
                "https://10.0.0.8/x.png"):
        with pytest.raises(InvalidRequest) as refused:
            await fetch(url, param="init_image", allow_private=False, timeout=2)
        assert refused.value.code == "invalid_image_url"
    data = await fetch(f"{image_host}/pony.png", param="init_image", allow_private=True, timeout=5)
    assert data.startswith(b"\x89PNG")
