"""/docs and /redoc render in a real browser with every asset served by the service itself."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_docs_pages_reference_no_cdn(client) -> None:
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html and "https://" not in html
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/redoc.standalone.js").status_code == 200


def _host(url: str) -> str:
    # A blob: URL (ReDoc's search worker) belongs to the page's own origin.
    return urlsplit(url.removeprefix("blob:")).hostname or url


def _render(live_url: str, path: str, selector: str) -> tuple[set[str], str]:
    """Loads a page headless; returns the hosts it reached over the network and the page text
    once ``selector`` shows. A request the page's CSP refused (ReDoc's hard-coded cdn.redoc.ly
    logo) never leaves the browser, so it does not count."""
    sync_api = pytest.importorskip("playwright.sync_api")
    requested: dict[str, str] = {}
    blocked: set[str] = set()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.setdefault(request.url, _host(request.url)))
            page.on("requestfailed", lambda request: blocked.add(request.url)
                    if "csp" in (request.failure or "").lower() else None)
            page.goto(f"{live_url}{path}", wait_until="networkidle")
            page.wait_for_selector(selector, timeout=30_000)
            text = page.inner_text("body")
        finally:
            browser.close()
    return {host for url, host in requested.items() if url not in blocked}, text


def test_swagger_ui_renders_offline(live) -> None:
    hosts, text = _render(live.url, "/docs", ".opblock")
    assert hosts == {"127.0.0.1"}, hosts
    assert "/v1/images/generations" in text


def test_redoc_renders_offline(live) -> None:
    hosts, text = _render(live.url, "/redoc", "[data-section-id]")
    assert hosts == {"127.0.0.1"}, hosts
    assert "Healthz" in text
