"""Keys: shown once, stored hashed, scoped, revocable on the next request."""

from __future__ import annotations

from sqlalchemy import Engine, text

from app.kit.tokens import generate_token, hash_token, parse_prefix


def test_token_format_checksum_rejects_typos() -> None:
    token = generate_token()
    assert parse_prefix(token.token) == token.prefix
    typo = token.token[:-1] + ("A" if token.token[-1] != "A" else "B")
    assert parse_prefix(typo) is None
    assert parse_prefix("sk-not-ours") is None


def test_key_is_stored_only_as_hash(client, customer, pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        row = conn.execute(text("SELECT prefix, key_hash FROM api_keys WHERE id = :k"), {"k": customer.key_id}).one()
        dump = conn.execute(text("SELECT string_agg(key_hash || prefix || name, '') FROM api_keys")).scalar()
    assert customer.key.startswith(row.prefix)
    assert row.key_hash == hash_token(customer.key)
    assert customer.key not in dump


def test_missing_malformed_and_wrong_keys_are_401(client) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    for bad in ("garbage", generate_token().token):
        r = client.get("/v1/models", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_refused_on_its_next_request(client, customer, admin_key) -> None:
    assert client.get("/v1/models", headers=customer.headers).status_code == 200
    r = client.delete(f"/admin/keys/{customer.key_id}", headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 200
    assert r.json()["revoked_at"] is not None
    assert client.get("/v1/models", headers=customer.headers).status_code == 401


def test_scopes_are_enforced(client, customer, make_customer) -> None:
    r = client.get("/admin/accounts", headers=customer.headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "missing_scope"
    moderator = make_customer(scopes=("moderator",))
    r = client.post("/v1/generations", json={"prompt": "x"}, headers=moderator.headers)
    assert r.status_code == 403


def test_basic_auth_password_carries_the_key(client, customer) -> None:
    r = client.get("/v1/models", auth=("anything", customer.key))
    assert r.status_code == 200


def test_admin_account_endpoints(client, admin_key) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    created = client.post("/admin/accounts", json={"name": "Acme"}, headers=auth)
    assert created.status_code == 201
    account = created.json()
    assert account["plan"]["code"] == "free"
    assert client.get(f"/admin/accounts/{account['id']}", headers=auth).json()["name"] == "Acme"
    listed = client.get("/admin/accounts", params={"limit": 500}, headers=auth).json()["data"]
    assert account["id"] in {a["id"] for a in listed}
    assert client.get("/admin/accounts/acct_missing", headers=auth).status_code == 404
    r = client.post("/admin/accounts", json={"name": "X", "plan": "platinum"}, headers=auth)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unknown_plan"
    r = client.post(f"/admin/accounts/{account['id']}/keys", json={"scopes": ["root"]}, headers=auth)
    assert r.status_code == 400
    key = client.post(f"/admin/accounts/{account['id']}/keys", json={"name": "ci", "scopes": ["generate"]},
                      headers=auth).json()
    assert key["key"].startswith(key["prefix"])
    keys = client.get(f"/admin/accounts/{account['id']}/keys", headers=auth).json()
    assert [k["id"] for k in keys] == [key["id"]]
    assert "key" not in keys[0]
    assert client.delete("/admin/keys/key_missing", headers=auth).status_code == 404
