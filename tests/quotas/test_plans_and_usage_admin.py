"""Plans, account overrides, key limits, and the usage endpoints."""

from __future__ import annotations

import csv
import io

from harness import wait_jobs_finished


def _admin(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def test_plans_can_be_created_listed_and_changed(client, admin_key) -> None:
    admin = _admin(admin_key)
    r = client.post("/admin/plans", headers=admin, json={"code": "pro", "name": "Pro", "monthly_image_quota": 10_000,
                                                          "daily_image_quota": 1_000, "requests_per_minute": 600,
                                                          "burst": 50, "priority": 10, "max_width": 2048,
                                                          "allowed_models": ["demo"]})
    assert r.status_code == 201, r.text
    assert r.json()["priority"] == 10
    assert client.post("/admin/plans", headers=admin, json={"code": "pro", "name": "again"}).status_code == 409
    assert "pro" in {p["code"] for p in client.get("/admin/plans", headers=admin).json()}
    patched = client.patch("/admin/plans/pro", headers=admin, json={"daily_image_quota": None, "max_n": 8})
    assert patched.status_code == 200
    assert (patched.json()["daily_image_quota"], patched.json()["max_n"]) == (None, 8)
    assert client.patch("/admin/plans/none", headers=admin, json={"max_n": 2}).status_code == 404
    assert client.patch("/admin/plans/pro", headers=admin, json={"max_n": 0}).status_code == 400


def test_account_overrides_replace_plan_limits_and_keys_only_tighten(client, admin_key, make_customer) -> None:
    admin = _admin(admin_key)
    cust = make_customer()
    # The free plan allows n <= 4; this account gets 6, then its key is held to 2.
    r = client.patch(f"/admin/accounts/{cust.account_id}", headers=admin,
                     json={"limit_overrides": {"max_n": 6, "daily_image_quota": 7}})
    assert r.status_code == 200, r.text
    assert r.json()["limit_overrides"] == {"max_n": 6, "daily_image_quota": 7}
    body = {"prompt": "a pony", "size": "64x64", "steps": 1, "n": 6}
    ok = client.post("/v1/generations", json=body, headers=cust.headers)
    assert ok.status_code == 202, ok.text
    tight = client.post(f"/admin/accounts/{cust.account_id}/keys", headers=admin,
                        json={"scopes": ["generate"], "limit_overrides": {"max_n": 2, "max_width": 8192}}).json()
    r = client.post("/v1/generations", json=body, headers={"Authorization": f"Bearer {tight['key']}"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "plan_limit_exceeded"
    # The account's daily override (7) is now nearly used up by the first job (6).
    r = client.post("/v1/generations", json={**body, "n": 2}, headers=cust.headers)
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "daily_quota_exceeded"
    assert r.json()["error"]["limit"] == 7


def test_suspended_account_is_refused_and_plan_models_are_enforced(client, admin_key, make_customer) -> None:
    admin = _admin(admin_key)
    client.post("/admin/plans", headers=admin, json={"code": "nomodels", "name": "x", "allowed_models": ["other"]})
    cust = make_customer(plan="nomodels")
    r = client.post("/v1/generations", json={"prompt": "a", "size": "64x64", "steps": 1}, headers=cust.headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "model_not_allowed"
    client.patch(f"/admin/accounts/{cust.account_id}", headers=admin, json={"status": "suspended"})
    r = client.get("/v1/models", headers=cust.headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "account_suspended"


def test_usage_endpoints_report_what_was_charged(client, admin_key, make_customer) -> None:
    cust = make_customer(plan="internal")
    ids = [client.post("/v1/generations", json={"prompt": "a", "size": "64x64", "steps": 2, "n": n},
                       headers=cust.headers).json()["id"] for n in (1, 2)]
    jobs = wait_jobs_finished(client, cust.headers, ids)
    assert [j["usage"]["images"] for j in jobs] == [1, 2]
    # 64x64 at 2 steps is 0.03 % of the 1024x1024x30 reference: billed at the one-unit minimum.
    assert jobs[0]["usage"]["price_units"] == 1
    mine = client.get("/v1/usage", headers=cust.headers).json()
    assert mine["account"]["day"]["used"] == 3
    assert mine["key"]["month"]["used"] == 3
    assert mine["account"]["month"]["limit"] is None

    admin = _admin(admin_key)
    report = client.get("/admin/usage", params={"group_by": "account"}, headers=admin).json()
    mine_row = [row for row in report["rows"] if row["group"] == cust.account_id]
    assert mine_row[0]["images"] == 3
    by_key = client.get("/admin/usage", params={"group_by": "key"}, headers=admin).json()
    assert cust.key_id in {row["group"] for row in by_key["rows"]}
    by_day = client.get("/admin/usage", params={"group_by": "day"}, headers={**admin, "Accept": "text/csv"})
    assert by_day.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(by_day.text)))
    assert sum(int(r["images"]) for r in rows) == report["total_images"]
    bad = client.get("/admin/usage", params={"from": "2026-02-01", "to": "2026-01-01"}, headers=admin)
    assert bad.status_code == 400
    assert client.get("/admin/usage", params={"group_by": "colour"}, headers=admin).status_code == 400
