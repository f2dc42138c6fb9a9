"""The console over plain HTTP: where it lives, its headers, its session rules (no browser needed)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from types import SimpleNamespace

import httpx
import pytest
from console_deploy import auth
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings
from app.console.routing import safe_next
from app.console.session import IDLE_SECONDS, ConsoleSession, SessionCodec, write_cookie


def test_the_console_is_outside_the_api_document_and_where_people_look(api) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console") or p in ("/", "/dashboard")]
    for entry in ("/", "/dashboard", "/admin"):
        r = api.get(entry, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (307, "/console/"), entry
    r = api.get("/console/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/login?next=%2Fconsole%2F")
    missing = api.get("/console/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v]
        if tag == "script" and "src" not in values:
            self.inline.append("script")
        if "style" in values or tag == "style":
            self.inline.append(f"style on <{tag}>")


def test_pages_have_a_strict_policy_and_load_only_their_own_files(api) -> None:
    r = api.get("/console/login")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    links = _Links()
    links.feed(r.text)
    assert links.inline == []
    assert links.urls and all(u.startswith("#") or (u.startswith("/") and not u.startswith("//"))
                              for u in links.urls), links.urls
    for asset in [u for u in links.urls if u.startswith("/console/static/")]:
        assert api.get(asset).status_code == 200, asset


def _sign_in(client: httpx.Client, key: str, next_path: str = "") -> httpx.Response:
    page = client.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return client.post("/console/login", data={"key": key, "csrf_token": token.group(1), "next": next_path})


def test_a_session_ends_when_its_key_is_revoked(console, api) -> None:
    made = api.post(f"/admin/accounts/{api.get('/v1/usage', headers=auth(console.admin_key)).json()['account_id']}"
                    "/keys", json={"name": "short-lived admin", "scopes": ["admin"]}, headers=auth(console.admin_key))
    assert made.status_code == 201, made.text
    with httpx.Client(base_url=console.url, follow_redirects=False) as browser:
        signed = _sign_in(browser, made.json()["key"], next_path="/console/accounts")
        assert (signed.status_code, signed.headers["location"]) == (303, "/console/accounts")
        assert browser.get("/console/accounts").status_code == 200
        assert api.delete(f"/admin/keys/{made.json()['id']}", headers=auth(console.admin_key)).status_code == 200
        after = browser.get("/console/accounts")
        assert (after.status_code, after.headers["location"]) == (303, "/console/login?next=%2Fconsole%2Faccounts")


def test_sign_in_goes_back_only_into_the_console(console) -> None:
    assert safe_next("/console/jobs?status=queued") == "/console/jobs?status=queued"
    for outside in ("//evil.example/", "https://evil.example/", "/admin/accounts", "/console\\..\\x", None, ""):
        assert safe_next(outside) is None, outside
    with httpx.Client(base_url=console.url, follow_redirects=False) as browser:
        r = _sign_in(browser, console.admin_key, next_path="//evil.example/console/")
        assert (r.status_code, r.headers["location"]) == (303, "/console/")


def test_the_session_cookie_expires_when_idle_and_cannot_be_forged() -> None:
    codec = SessionCodec(b"s" * 32)
    session = ConsoleSession(key_id="key_abc", signed_in_at=1_000.0)
    raw = codec.encode(session, now=10_000)
    back = codec.decode(raw, now=10_000 + IDLE_SECONDS - 1)
    assert back is not None and (back.key_id, back.csrf) == ("key_abc", session.csrf)
    assert codec.decode(raw, now=10_000 + IDLE_SECONDS + 1) is None
    assert SessionCodec(b"t" * 32).decode(raw, now=10_000) is None
    assert codec.decode(raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB"), now=10_000) is None
    assert b"key_abc" not in raw.encode()  # encrypted, not just signed


@pytest.mark.parametrize(("scheme", "public_url", "secure"), [("http", None, False), ("https", None, True),
                                                              ("http", "https://images.example.com", True)])
async def test_the_cookie_is_secure_behind_tls(scheme: str, public_url: str | None, secure: bool) -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:", public_url=public_url)
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(settings=settings),
                                                console_codec=SessionCodec(b"s" * 32)))
    request = Request({"type": "http", "scheme": scheme, "server": ("console.example", 443), "path": "/console/",
                       "headers": [], "query_string": b"", "root_path": "", "app": app})
    request.state.console_session = ConsoleSession()
    response = Response()
    await write_cookie(request, response)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert f"Max-Age={IDLE_SECONDS}" in cookie
    assert ("Secure" in cookie) is secure
