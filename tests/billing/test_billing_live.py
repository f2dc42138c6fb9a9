"""Billing through the running service: admin endpoints, a real generation billed via the embedded
reporter, Stripe down for a while, Prometheus gauges, and `ponyserve billing reconcile`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from billing_helpers import add_usage, paid_account
from fake_stripe import API_KEY, MeterEvent
from harness import LiveServer
from sqlalchemy import Engine, create_engine, text

from app.db import Database, sync_url


@pytest.fixture(scope="module")
def engine(billing_live: tuple[LiveServer, str]) -> Iterator[Engine]:
    eng = create_engine(sync_url(billing_live[0].settings.database_url))
    yield eng
    eng.dispose()


def _until(check: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _plan(client: httpx.Client, code: str, *, flat: str | None = None, metered: str | None = None) -> None:
    body: dict[str, object] = {"code": code, "name": code.title(), "is_paid": True, "max_n": 4}
    if flat:
        body["stripe_price_id"] = flat
    if metered:
        body["stripe_metered_price_id"] = metered
    r = client.post("/admin/plans", json=body)
    assert r.status_code == 201, r.text


def _account(client: httpx.Client, plan: str) -> tuple[str, str]:
    acct = client.post("/admin/accounts", json={"name": "billing partner", "plan": plan})
    assert acct.status_code == 201, acct.text
    key = client.post(f"/admin/accounts/{acct.json()['id']}/keys", json={"scopes": ["generate"]})
    assert key.status_code == 201, key.text
    return acct.json()["id"], key.json()["key"]


def test_customer_link_checkout_and_subscription(bclient: httpx.Client, lstripe) -> None:  # type: ignore[no-untyped-def]
    _plan(bclient, "team", flat="price_team_flat", metered="price_team_images")
    _plan(bclient, "bare")
    account, _ = _account(bclient, "team")

    r = bclient.post(f"/admin/accounts/{account}/billing/checkout", json={
        "plan": "team", "success_url": "https://partner.example/ok", "cancel_url": "https://partner.example/no"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "customer_not_linked"

    first = bclient.post(f"/admin/accounts/{account}/billing/customer", json={"email": "ops@partner.example"})
    assert first.status_code == 200, first.text
    customer = first.json()["stripe_customer_id"]
    assert customer.startswith("cus_") and lstripe.state.customers[customer]["metadata"] == {"account_id": account}
    again = bclient.post(f"/admin/accounts/{account}/billing/customer", json={})
    assert again.json()["stripe_customer_id"] == customer and len(lstripe.state.customers) >= 1
    other, _ = _account(bclient, "team")
    taken = bclient.post(f"/admin/accounts/{other}/billing/customer", json={"stripe_customer_id": customer})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "customer_linked_elsewhere"
    missing = bclient.post(f"/admin/accounts/{other}/billing/customer", json={"stripe_customer_id": "cus_nope"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "unknown_stripe_customer"

    r = bclient.post(f"/admin/accounts/{account}/billing/checkout", json={
        "plan": "team", "success_url": "https://partner.example/ok", "cancel_url": "https://partner.example/no"})
    assert r.status_code == 201, r.text
    assert r.json()["id"].startswith("cs_test_") and r.json()["url"]
    sent = lstripe.state.checkout_sessions[-1]
    assert sent["mode"] == "subscription" and sent["customer"] == customer
    assert sent["client_reference_id"] == account
    assert sent["line_items"] == [{"price": "price_team_flat", "quantity": "1"}, {"price": "price_team_images"}]
    r = bclient.post(f"/admin/accounts/{account}/billing/checkout", json={
        "plan": "bare", "success_url": "https://partner.example/ok", "cancel_url": "https://partner.example/no"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "plan_not_billable"

    r = bclient.post(f"/admin/accounts/{account}/billing/subscription", json={"plan": "team"})
    assert r.status_code == 201, r.text
    assert lstripe.state.subscriptions[-1]["items"] == [{"price": "price_team_flat", "quantity": "1"},
                                                        {"price": "price_team_images"}]
    state = bclient.get(f"/admin/accounts/{account}/billing").json()
    assert state["stripe_subscription_id"] == r.json()["id"] and state["subscription_status"] == "incomplete"
    assert bclient.patch("/admin/plans/bare", json={"stripe_price_id": "price_team_flat"}).json()["error"]["code"] \
        == "price_in_use"


def test_a_real_generation_is_billed_through_the_outbox(bclient: httpx.Client, billing_live, lstripe,  # type: ignore[no-untyped-def]
                                                        engine: Engine) -> None:
    _plan(bclient, "studio", flat="price_studio_flat", metered="price_studio_images")
    account, key = _account(bclient, "studio")
    customer = bclient.post(f"/admin/accounts/{account}/billing/customer", json={}).json()["stripe_customer_id"]
    r = bclient.post("/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                     json={"prompt": "a pony", "size": "64x64", "steps": 1, "n": 2})
    assert r.status_code == 200, r.text
    with engine.connect() as conn:
        ledger_ids = conn.execute(text("SELECT id FROM usage_ledger WHERE job_id = :j ORDER BY id"),
                                  {"j": r.json()["id"]}).scalars().all()
        installation = conn.execute(text("SELECT value FROM system_meta WHERE key = 'billing_installation_id'")
                                    ).scalar()
    assert len(ledger_ids) == 2
    expected = {f"ponyserve-{installation}-{i}" for i in ledger_ids}
    _until(lambda: expected <= set(lstripe.accepted()), what="the meter events")
    for ident in expected:
        event = lstripe.accepted()[ident]
        assert (event.customer, event.value, event.event_name) == (customer, 1.0, "ponyserve_images")
        assert abs(event.timestamp - time.time()) < 120
    _until(lambda: bclient.get(f"/admin/accounts/{account}/billing").json()["outbox"] == {"sent": 2},
           what="the outbox rows marked sent")


def test_stripe_down_loses_nothing_and_the_backlog_shows(bclient: httpx.Client, billing_live, lstripe,  # type: ignore[no-untyped-def]
                                                        engine: Engine) -> None:
    server, _ = billing_live
    lstripe.stop()
    db = Database(server.settings.database_url)

    async def make() -> tuple[str, list[int]]:
        try:
            account, key = await paid_account(db, customer="cus_outage")
            return account, await add_usage(db, account, key, 25)
        finally:
            await db.dispose()

    account, usage = asyncio.run(make())
    before = bclient.get("/admin/billing").json()["outbox"]["failures_total"]

    def backlog_seen() -> dict[str, object] | None:
        body: dict[str, object] = bclient.get("/admin/billing").json()
        outbox = body["outbox"]
        assert isinstance(outbox, dict)
        return body if outbox["backlog"] >= 25 and outbox["failures_total"] > before else None

    body = _until(backlog_seen, what="the backlog and failures")
    assert isinstance(body, dict)
    assert body["outbox"]["oldest_age_seconds"] > 0 and body["outbox"]["retrying"] >= 1
    assert body["recent_failures"] and "network" in body["recent_failures"][0]["last_error"]
    r = bclient.post(f"/admin/accounts/{account}/billing/customer", json={"stripe_customer_id": "cus_x1"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "stripe_unavailable" and r.headers["Retry-After"]

    def gauge() -> float | None:
        for line in bclient.get("/metrics").text.splitlines():
            if line.startswith("ponyserve_billing_outbox_backlog "):
                value = float(line.split()[1])
                return value if value >= 25 else None
        return None

    _until(gauge, what="the backlog gauge")
    metrics = bclient.get("/metrics").text
    for name in ("ponyserve_billing_outbox_oldest_age_seconds", "ponyserve_billing_outbox_failures_total",
                 "ponyserve_billing_outbox_sent_total"):
        assert f"\n{name} " in metrics

    time.sleep(1.0)  # down a while longer: still nothing lost
    lstripe.start()
    with engine.connect() as conn:
        installation = conn.execute(text("SELECT value FROM system_meta WHERE key = 'billing_installation_id'")
                                    ).scalar()
    expected = {f"ponyserve-{installation}-{u}" for u in usage}
    _until(lambda: expected <= set(lstripe.accepted()), timeout=30, what="the backlog to drain")
    _until(lambda: bclient.get(f"/admin/accounts/{account}/billing").json()["outbox"] == {"sent": 25},
           what="rows marked sent")
    assert lstripe.total_for("cus_outage") == 25
    assert bclient.get("/admin/billing").json()["outbox"]["backlog"] == 0


def test_reconcile_compares_ledger_outbox_and_stripe(bclient: httpx.Client, billing_live,  # type: ignore[no-untyped-def]
                                                     lstripe) -> None:
    server, _ = billing_live
    db = Database(server.settings.database_url)

    async def make() -> str:
        try:
            account, key = await paid_account(db, customer="cus_reconcile")
            await add_usage(db, account, key, 5)
            return account
        finally:
            await db.dispose()

    account = asyncio.run(make())
    _until(lambda: lstripe.total_for("cus_reconcile") == 5, what="the reconcile customer's events")
    month = datetime.now(UTC).strftime("%Y-%m")
    env = {"PONYSERVE_DATABASE_URL": server.settings.database_url, "PONYSERVE_STRIPE_SECRET_KEY": API_KEY,
           "PONYSERVE_STRIPE_API_BASE": lstripe.url, "PONYSERVE_LOG_JSON": "false"}

    def run() -> tuple[int, dict[str, object]]:
        import os

        done = subprocess.run([sys.executable, "-m", "app.cli", "billing", "reconcile", "--month", month,
                               "--account", account],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        return done.returncode, json.loads(done.stdout)

    _until(lambda: bclient.get(f"/admin/accounts/{account}/billing").json()["outbox"] == {"sent": 5},
           what="the account's events marked sent")
    code, report = run()
    assert code == 0, report
    assert report["stripe"] == "compared" and report["meter_id"] == "mtr_test_ponyserve" and report["ok"] is True
    assert report["accounts"] == [{"account_id": account, "billable_images": 5, "unbilled_before_link": 0,
                                   "missing_outbox": 0}]
    [row] = report["customers"]  # type: ignore[misc]
    assert (row["stripe_customer_id"], row["outbox"]["sent"], row["stripe_total"]) == ("cus_reconcile", 5, 5)

    # Stripe knows of an event we never sent (say, a double from outside): reported, exit 1.
    with lstripe.lock:
        lstripe.state.events["foreign"] = MeterEvent("foreign", "ponyserve_images", "cus_reconcile", 1.0,
                                                     int(time.time()))
    code, report = run()
    assert code == 1 and report["ok"] is False
    assert {"kind": "stripe_mismatch", "stripe_customer_id": "cus_reconcile", "sent": 5, "stripe_total": 6.0,
            "difference": 1.0} in report["discrepancies"]  # type: ignore[operator]


def test_set_aside_events_are_listed_and_resolved_by_admins(bclient: httpx.Client, billing_live,  # type: ignore[no-untyped-def]
                                                            lstripe, engine: Engine) -> None:
    server, _ = billing_live
    lstripe.customer_modes.update({"cus_aside_fail": "reject", "cus_aside_doubt": "500"})
    db = Database(server.settings.database_url)

    async def make() -> dict[str, tuple[str, int]]:
        try:
            made = {}
            for name, at in (("fail", None), ("doubt", None), ("old", datetime.now(UTC) - timedelta(days=36))):
                account, key = await paid_account(db, customer=f"cus_aside_{name}")
                made[name] = (account, (await add_usage(db, account, key, 1, at=at))[0])
            return made
        finally:
            await db.dispose()

    made = asyncio.run(make())

    def status_of(name: str) -> str:
        account, usage = made[name]
        rows = bclient.get("/admin/billing/outbox", params={"account_id": account}).json()["data"]
        assert [r["usage_id"] for r in rows] == [usage]
        return str(rows[0]["status"])

    _until(lambda: status_of("fail") == "failed", what="the rejected event set aside")
    _until(lambda: status_of("old") == "expired", what="the old event expired")
    _until(lambda: bclient.get("/admin/billing/outbox", params={"account_id": made["doubt"][0]}).json()["data"][0]
           ["failures"] >= 1, what="a 500 on the doubtful event")
    with engine.begin() as conn:  # that 500 happened 24 hours ago: too late to repeat it safely
        conn.execute(text("UPDATE billing_outbox SET doubt_since = :t WHERE usage_id = :u"),
                     {"t": datetime.now(UTC) - timedelta(hours=24), "u": made["doubt"][1]})
    _until(lambda: status_of("doubt") == "unconfirmed", what="the doubtful event set aside")

    aside = {r["usage_id"]: r for r in bclient.get("/admin/billing").json()["set_aside"]}
    assert {made[n][1] for n in made} <= set(aside)
    assert "Injected rejection" in aside[made["fail"][1]]["last_error"]

    def resolve(name: str, action: str) -> httpx.Response:
        return bclient.post(f"/admin/billing/outbox/{made[name][1]}/resolve", json={"action": action})

    assert resolve("old", "resend").json()["error"]["code"] == "invalid_outbox_transition"  # Stripe refuses it
    assert resolve("old", "dismiss").json()["status"] == "dismissed"
    assert resolve("doubt", "mark_sent").json()["status"] == "sent"
    assert resolve("doubt", "dismiss").json()["error"]["code"] == "invalid_outbox_transition"
    assert bclient.post("/admin/billing/outbox/999999999/resolve", json={"action": "dismiss"}).status_code == 404
    lstripe.customer_modes.clear()  # the cause is fixed: send it again
    again = resolve("fail", "resend").json()
    assert again["status"] == "pending" and again["resolved_by"].startswith("key_")
    _until(lambda: status_of("fail") == "sent", what="the resent event")
    assert lstripe.total_for("cus_aside_fail") == 1
