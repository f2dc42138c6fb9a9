"""POST /webhooks/stripe with payloads signed exactly as Stripe signs them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from billing_helpers import WEBHOOK_SECRETS, event, signature_header
from harness import LiveServer
from sqlalchemy import Engine, create_engine, text

from app.billing.webhooks import verify_signature
from app.db import sync_url
from app.errors import InvalidRequest

OLD_SECRET, CURRENT_SECRET = WEBHOOK_SECRETS


@pytest.fixture(scope="module")
def engine(billing_live: tuple[LiveServer, str]) -> Iterator[Engine]:
    eng = create_engine(sync_url(billing_live[0].settings.database_url))
    yield eng
    eng.dispose()


def _deliver(client: httpx.Client, raw: bytes, *, secret: str = CURRENT_SECRET, t: int | None = None,
             header: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json",
               "Stripe-Signature": header if header is not None else signature_header(raw, secret, t=t)}
    return client.post("/webhooks/stripe", content=raw, headers=headers)


def _setup(client: httpx.Client, suffix: str) -> dict[str, str]:
    """Plans basic/plus with their own prices, an account linked to a new customer, and its key."""
    for tier in ("basic", "plus"):
        r = client.post("/admin/plans", json={
            "code": f"{tier}-{suffix}", "name": tier, "is_paid": True,
            "stripe_price_id": f"price_{tier}_{suffix}", "stripe_metered_price_id": f"price_{tier}_img_{suffix}"})
        assert r.status_code == 201, r.text
    account = client.post("/admin/accounts", json={"name": "hooked", "plan": "free"}).json()["id"]
    key = client.post(f"/admin/accounts/{account}/keys", json={"scopes": ["generate"]}).json()["key"]
    customer = client.post(f"/admin/accounts/{account}/billing/customer", json={}).json()["stripe_customer_id"]
    return {"account": account, "key": key, "customer": customer, "suffix": suffix}


def _subscription(ctx: dict[str, str], sub_id: str, status: str, tier: str) -> dict[str, Any]:
    suffix = ctx["suffix"]
    return {"id": sub_id, "object": "subscription", "customer": ctx["customer"], "status": status,
            "items": {"object": "list", "data": [
                {"id": "si_flat", "price": {"id": f"price_{tier}_{suffix}", "object": "price"}},
                {"id": "si_metered", "price": {"id": f"price_{tier}_img_{suffix}", "object": "price"}}]}}


def _billing(client: httpx.Client, account: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/admin/accounts/{account}/billing").json()
    return body


def _stored(engine: Engine, event_id: str) -> tuple[int, str | None] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT deliveries, outcome FROM billing_webhook_events WHERE id = :i"),
                           {"i": event_id}).first()
    return (int(row[0]), row[1]) if row else None


def test_our_test_signer_is_the_one_stripe_verifies() -> None:
    raw = event("invoice.paid", {"id": "in_x", "customer": "cus_x"})
    header = signature_header(raw, CURRENT_SECRET)
    stripe.WebhookSignature.verify_header(raw.decode(), header, CURRENT_SECRET, tolerance=300)
    assert stripe.Webhook.construct_event(raw.decode(), header, CURRENT_SECRET).type == "invoice.paid"
    assert verify_signature(raw, header, list(WEBHOOK_SECRETS), tolerance=300) == int(header[2:12])
    with pytest.raises(InvalidRequest) as exc:
        verify_signature(raw, header, ["whsec_unrelated"], tolerance=300)
    assert exc.value.code == "invalid_signature"


def test_forged_stale_and_missing_signatures_are_refused_and_change_nothing(bclient: httpx.Client,
                                                                           engine: Engine) -> None:
    event_id = f"evt_{secrets.token_hex(8)}"
    raw = event("invoice.paid", {"id": "in_forged", "customer": "cus_forged", "amount_paid": 10_000,
                                 "currency": "usd"}, event_id=event_id)
    cases = {
        "invalid_signature": _deliver(bclient, raw, secret="whsec_attacker"),
        "stale_signature": _deliver(bclient, raw, t=int(time.time()) - 400),
        "missing_signature": _deliver(bclient, raw, header=""),
    }
    tampered = raw.replace(b"10000", b"99999")
    cases["tampered"] = _deliver(bclient, tampered, header=signature_header(raw, CURRENT_SECRET))
    for label, r in cases.items():
        assert r.status_code == 400, (label, r.text)
        assert r.json()["error"]["code"] == (label if label != "tampered" else "invalid_signature")
    assert _stored(engine, event_id) is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM revenue_entries WHERE reference = 'in_forged'")).scalar() == 0


def test_rotated_secrets_and_several_v1_values_verify(bclient: httpx.Client) -> None:
    for secret in WEBHOOK_SECRETS:
        r = _deliver(bclient, event("ping.test", {"id": "x"}), secret=secret)
        assert r.status_code == 200 and r.json()["outcome"] == "ignored", r.text
    raw = event("ping.test", {"id": "y"})
    header = signature_header(raw, CURRENT_SECRET, extra_v1=("0" * 64,))
    assert _deliver(bclient, raw, header=header).status_code == 200


def test_a_replayed_event_is_applied_once(bclient: httpx.Client, engine: Engine) -> None:
    ctx = _setup(bclient, secrets.token_hex(3))
    invoice = {"id": f"in_{secrets.token_hex(6)}", "object": "invoice", "customer": ctx["customer"],
               "amount_due": 4900, "amount_paid": 4900, "currency": "usd",
               "status_transitions": {"paid_at": 1_790_000_000}}
    raw = event("invoice.paid", invoice)
    answers = [_deliver(bclient, raw).json() for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert answers[0]["outcome"] == "applied"
    event_id = answers[0]["event_id"]
    assert _stored(engine, event_id) == (3, "applied")
    with engine.connect() as conn:
        revenue = conn.execute(text("SELECT amount_usd, source, account_id, occurred_at FROM revenue_entries "
                                    "WHERE reference = :r"), {"r": invoice["id"]}).all()
    assert len(revenue) == 1
    assert (float(revenue[0][0]), revenue[0][1], revenue[0][2]) == (49.0, "stripe", ctx["account"])
    # The same invoice paid again under another event id (Stripe resends): still one revenue entry.
    assert _deliver(bclient, event("invoice.paid", invoice)).json()["outcome"] == "duplicate"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM revenue_entries WHERE reference = :r"),
                            {"r": invoice["id"]}).scalar() == 1


def test_out_of_order_subscription_events_end_in_the_latest_state(bclient: httpx.Client) -> None:
    ctx = _setup(bclient, secrets.token_hex(3))
    suffix, t = ctx["suffix"], int(time.time())
    created = event("customer.subscription.created", _subscription(ctx, "sub_a", "active", "basic"), created=t)
    upgraded = event("customer.subscription.updated", _subscription(ctx, "sub_a", "active", "plus"), created=t + 10)
    deleted = event("customer.subscription.deleted", _subscription(ctx, "sub_a", "canceled", "plus"), created=t + 20)

    assert _deliver(bclient, upgraded).json()["outcome"] == "applied"
    assert _billing(bclient, ctx["account"])["plan"] == f"plus-{suffix}"
    assert _deliver(bclient, created).json()["outcome"] == "stale"  # older: never overwrites the upgrade
    state = _billing(bclient, ctx["account"])
    assert (state["plan"], state["subscription_status"]) == (f"plus-{suffix}", "active")
    assert _deliver(bclient, deleted).json()["outcome"] == "applied"
    assert _deliver(bclient, upgraded).json()["duplicate"] is True
    # A fresh delivery of an older event under a new id cannot revive a canceled subscription either.
    revived = event("customer.subscription.updated", _subscription(ctx, "sub_a", "active", "plus"), created=t + 15)
    assert _deliver(bclient, revived).json()["outcome"] == "stale"
    state = _billing(bclient, ctx["account"])
    assert (state["plan"], state["subscription_status"], state["stripe_subscription_id"]) == \
        ("free", "canceled", "sub_a")

    # A new subscription after the cancellation takes over; the old one's late events do not touch it.
    fresh = event("customer.subscription.created", _subscription(ctx, "sub_b", "active", "basic"), created=t + 30)
    assert _deliver(bclient, fresh).json()["outcome"] == "applied"
    late = event("customer.subscription.deleted", _subscription(ctx, "sub_a", "canceled", "plus"), created=t + 40)
    assert _deliver(bclient, late).json()["outcome"] == "ignored"
    paused = event("customer.subscription.paused", _subscription(ctx, "sub_b", "paused", "basic"), created=t + 50)
    assert _deliver(bclient, paused).json()["outcome"] == "applied"
    assert _billing(bclient, ctx["account"])["plan"] == "free"
    resumed = event("customer.subscription.resumed", _subscription(ctx, "sub_b", "active", "basic"), created=t + 60)
    assert _deliver(bclient, resumed).json()["outcome"] == "applied"
    state = _billing(bclient, ctx["account"])
    assert (state["plan"], state["subscription_status"], state["stripe_subscription_id"]) == \
        (f"basic-{suffix}", "active", "sub_b")


def test_events_for_a_customer_linked_later_are_applied_on_link(bclient: httpx.Client, lstripe) -> None:  # type: ignore[no-untyped-def]
    ctx = _setup(bclient, secrets.token_hex(3))
    newcomer = lstripe.create_customer({"name": "newcomer"}, None)["id"]
    early = {**ctx, "customer": newcomer}
    r = _deliver(bclient, event("customer.subscription.created", _subscription(early, "sub_n", "active", "plus")))
    assert r.json()["outcome"] == "unknown_customer"
    account = bclient.post("/admin/accounts", json={"name": "late link", "plan": "free"}).json()["id"]
    assert bclient.post(f"/admin/accounts/{account}/billing/customer",
                        json={"stripe_customer_id": newcomer}).status_code == 200
    deadline = time.monotonic() + 10
    while _billing(bclient, account)["plan"] != f"plus-{ctx['suffix']}":
        assert time.monotonic() < deadline, _billing(bclient, account)
        time.sleep(0.05)


def test_payment_failure_grace_402_then_paid(bclient: httpx.Client) -> None:
    """Grace is 2 s on this server: keys work, then get 402 billing_past_due, then work once paid."""
    ctx = _setup(bclient, secrets.token_hex(3))
    key = {"Authorization": f"Bearer {ctx['key']}"}
    assert bclient.get("/v1/usage", headers=key).status_code == 200
    invoice = {"id": f"in_{secrets.token_hex(6)}", "object": "invoice", "customer": ctx["customer"],
               "amount_due": 2900, "amount_paid": 0, "currency": "usd"}
    failed_at = int(time.time())
    assert _deliver(bclient, event("invoice.payment_failed", invoice, created=failed_at)).json()["outcome"] == \
        "applied"
    state = _billing(bclient, ctx["account"])
    assert state["past_due_since"] and state["grace_until"] and state["keys_refused"] is False
    assert [i["id"] for i in state["unpaid_invoices"]] == [invoice["id"]]
    assert bclient.get("/v1/usage", headers=key).status_code == 200  # within the grace period

    deadline = time.monotonic() + 10
    while (r := bclient.get("/v1/usage", headers=key)).status_code != 402:
        assert r.status_code == 200 and time.monotonic() < deadline
        time.sleep(0.1)
    assert r.json()["error"]["code"] == "billing_past_due" and r.json()["error"]["type"] == "billing_error"
    assert bclient.post("/v1/images/generations", headers=key, json={"prompt": "x", "size": "64x64"}
                        ).status_code == 402
    assert _billing(bclient, ctx["account"])["keys_refused"] is True

    paid = {**invoice, "amount_paid": 2900, "status_transitions": {"paid_at": failed_at + 5}}
    assert _deliver(bclient, event("invoice.paid", paid, created=failed_at + 5)).json()["outcome"] == "applied"
    assert bclient.get("/v1/usage", headers=key).status_code == 200
    # A retry of the old failure delivered late (new event id, older state) cannot undo the payment.
    late = event("invoice.payment_failed", invoice, created=failed_at + 1)
    assert _deliver(bclient, late).json()["outcome"] == "stale"
    assert bclient.get("/v1/usage", headers=key).status_code == 200
    state = _billing(bclient, ctx["account"])
    assert (state["past_due_since"], state["grace_until"], state["unpaid_invoices"]) == (None, None, [])
