"""Links handed out never take their base from the caller's Host header; forwarded headers only
count from configured proxies; PONYSERVE_PUBLIC_URL wins over everything."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from app.config import Settings
from app.context import base_url


def _request(settings: Settings, *, client: str = "203.0.113.9", headers: dict[str, str] | None = None,
             server: tuple[str, int] = ("10.0.0.2", 8000)) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(settings=settings)))
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": raw, "scheme": "http",
                             "server": server, "client": (client, 40000), "root_path": "", "app": app,
                             "query_string": b""}
    return Request(scope)


def test_host_header_never_decides_the_base() -> None:
    assert base_url(_request(Settings(), headers={"Host": "evil.example"})) == "http://10.0.0.2:8000/"


def test_public_url_wins() -> None:
    settings = Settings(public_url="https://img.example.com/", trusted_proxies=["203.0.113.0/24"])
    request = _request(settings, headers={"Host": "evil.example", "X-Forwarded-Host": "proxy.example"})
    assert base_url(request) == "https://img.example.com/"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    settings = Settings(trusted_proxies=["127.0.0.1"])
    request = _request(settings, headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
                                          "Forwarded": "host=evil.example;proto=https"})
    assert base_url(request) == "http://10.0.0.2:8000/"


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Forwarded-Host": "api.example.com", "X-Forwarded-Proto": "https"}, "https://api.example.com/"),
    # The last value is our proxy's; the first came from the client.
    ({"X-Forwarded-Host": "evil.example, api.example.com"}, "http://api.example.com/"),
    ({"Forwarded": 'for=1.2.3.4;host="api.example.com:8443";proto=https'}, "https://api.example.com:8443/"),
    # Garbage a proxy passed through is not turned into a link.
    ({"X-Forwarded-Host": "evil.example/path?x"}, "http://10.0.0.2:8000/"),
])
def test_forwarded_headers_from_a_trusted_proxy_are_honoured(headers: dict[str, str], expected: str) -> None:
    settings = Settings(trusted_proxies=["127.0.0.0/8"])
    assert base_url(_request(settings, client="127.0.0.1", headers=headers)) == expected


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        Settings(trusted_proxies=["not-an-ip"])
    with pytest.raises(ValueError):
        Settings(public_url="img.example.com")
    assert Settings(trusted_proxies="10.0.0.0/8, 127.0.0.1").trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]


@contextmanager
def _trusting(live: Any, proxies: list[str]) -> Iterator[None]:
    previous = live.settings.trusted_proxies
    live.settings.trusted_proxies = proxies
    try:
        yield
    finally:
        live.settings.trusted_proxies = previous


def _image_urls(client: Any, customer: Any, headers: dict[str, str]) -> list[str]:
    r = client.post("/v1/images/generations", headers={**customer.headers, **headers},
                    json={"prompt": "a pony", "size": "64x64", "steps": 1, "response_format": "url"})
    assert r.status_code == 200, r.text
    urls = [item["url"] for item in r.json()["data"]]
    job = client.get(f"/v1/generations/{r.json()['id']}", headers={**customer.headers, **headers}).json()
    return urls + [o["url"] for o in job["outputs"]]


def test_live_links_ignore_host_and_untrusted_forwarding(live, client, customer) -> None:
    urls = _image_urls(client, customer, {"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert urls and all(u.startswith(f"{live.url}/v1/images/") for u in urls), urls
    # The link works: it points at the socket the request arrived on.
    assert client.get(urls[0]).status_code == 200


def test_live_links_honour_a_trusted_proxy(live, client, customer) -> None:
    with _trusting(live, ["127.0.0.1"]):
        urls = _image_urls(client, customer, {"X-Forwarded-Host": "api.example.com", "X-Forwarded-Proto": "https"})
    assert urls and all(u.startswith("https://api.example.com/v1/images/") for u in urls), urls
