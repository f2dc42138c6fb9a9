"""Stripe object creations are idempotent: a retried or doubled admin call makes one subscription
(one customer, one Checkout session), and a deliberate new subscription after a cancellation
makes a new one. The fake Stripe enforces idempotency keys the way Stripe does."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from fake_stripe import API_KEY, FakeStripe


def _paid_account(client: httpx.Client) -> tuple[str, str, dict[str, str]]:
    """A new account on two new plans' worth of prices, linked to a new customer: (account, customer, plans)."""
    tag = secrets.token_hex(4)
    plans = {"one": f"one-{tag}", "two": f"two-{tag}"}
    for name, code in plans.items():
        r = client.post("/admin/plans", json={"code": code, "name": code, "is_paid": True, "max_n": 4,
                                              "stripe_price_id": f"price_{name}_{tag}",
                                              "stripe_metered_price_id": f"price_{name}_images_{tag}"})
        assert r.status_code == 201, r.text
    account = client.post("/admin/accounts", json={"name": f"idem-{tag}", "plan": plans["one"]})
    assert account.status_code == 201, account.text
    account_id = account.json()["id"]
    linked = client.post(f"/admin/accounts/{account_id}/billing/customer", json={})
    assert linked.status_code == 200, linked.text
    return account_id, linked.json()["stripe_customer_id"], plans


def _subscribe(client: httpx.Client, account: str, plan: str) -> httpx.Response:
    return client.post(f"/admin/accounts/{account}/billing/subscription", json={"plan": plan})


def _at_once(client: httpx.Client, calls: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """The POSTs sent concurrently, each on its own connection."""

    def post(call: tuple[str, dict[str, Any]]) -> httpx.Response:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=60) as own:
            return own.post(call[0], json=call[1])

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(post, calls))


def test_fake_stripe_replays_a_key_and_refuses_it_with_other_parameters(fake: FakeStripe) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=fake.url, headers=auth) as stripe:
        first = stripe.post("/v1/customers", data={"name": "a"}, headers={"Idempotency-Key": "k1"})
        again = stripe.post("/v1/customers", data={"name": "a"}, headers={"Idempotency-Key": "k1"})
        other = stripe.post("/v1/customers", data={"name": "b"}, headers={"Idempotency-Key": "k1"})
        elsewhere = stripe.post("/v1/subscriptions", data={"customer": first.json()["id"]},
                                headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    for refused in (other, elsewhere):
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "idempotency_error"
    assert len(fake.state.customers) == 1 and not fake.state.subscriptions


def test_a_retried_subscription_call_creates_one_subscription_until_it_is_canceled(
    bclient: httpx.Client, lstripe: FakeStripe
) -> None:
    account, customer, plans = _paid_account(bclient)
    # Stripe creates the subscription, but its answer never arrives.
    lstripe.fail_next_create("drop")
    lost = _subscribe(bclient, account, plans["one"])
    assert lost.status_code == 503 and lost.json()["error"]["code"] == "stripe_unavailable"
    [made] = lstripe.subscriptions_of(customer)

    # The admin retries: once with the account not yet following it, once more after it does.
    for _ in range(2):
        retried = _subscribe(bclient, account, plans["one"])
        assert retried.status_code == 201, retried.text
        assert retried.json() == {"id": made["id"], "status": "incomplete"}
    assert [sub["id"] for sub in lstripe.subscriptions_of(customer)] == [made["id"]]
    assert bclient.get(f"/admin/accounts/{account}/billing").json()["stripe_subscription_id"] == made["id"]
    other = _subscribe(bclient, account, plans["two"])
    assert other.status_code == 409 and other.json()["error"]["code"] == "subscription_exists"

    # Canceled in Stripe: asking again is a new subscription, under the next generation's key.
    lstripe.cancel_subscription(made["id"])
    fresh = _subscribe(bclient, account, plans["two"])
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["id"] != made["id"]
    assert len(lstripe.subscriptions_of(customer)) == 2
    prefix = f"ponyserve-subscription-{account}-{customer}-"
    assert sorted(k for k in lstripe.state.idempotent if k.startswith(prefix)) == [f"{prefix}0", f"{prefix}1"]


def test_two_attempts_in_flight_at_once_share_one_subscription(bclient: httpx.Client, lstripe: FakeStripe) -> None:
    account, customer, plans = _paid_account(bclient)
    path = f"/admin/accounts/{account}/billing/subscription"
    # Both have looked at Stripe (nothing yet) before either creation runs: only the key can tell.
    lstripe.gate_creations(2)
    answers = _at_once(bclient, [(path, {"plan": plans["one"]})] * 2)
    [made] = lstripe.subscriptions_of(customer)
    assert ("/v1/subscriptions", f"ponyserve-subscription-{account}-{customer}-0") in lstripe.state.replays
    # Under load one attempt may give up waiting (Stripe's timeout here is short): never a second subscription.
    assert {a.status_code for a in answers} <= {201, 503} and 201 in {a.status_code for a in answers}
    assert {a.json()["id"] for a in answers if a.status_code == 201} == {made["id"]}


def test_two_plans_requested_at_once_make_one_subscription(bclient: httpx.Client, lstripe: FakeStripe) -> None:
    account, customer, plans = _paid_account(bclient)
    path = f"/admin/accounts/{account}/billing/subscription"
    lstripe.gate_creations(2)
    answers = _at_once(bclient, [(path, {"plan": plans["one"]}), (path, {"plan": plans["two"]})])
    assert len(lstripe.subscriptions_of(customer)) == 1
    codes = sorted(a.status_code for a in answers)
    assert codes in ([201, 409], [409, 503]), [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["error"]["code"] == "stripe_idempotency_conflict"


def test_a_retried_checkout_returns_the_same_session(bclient: httpx.Client, lstripe: FakeStripe) -> None:
    account, customer, plans = _paid_account(bclient)
    path = f"/admin/accounts/{account}/billing/checkout"
    body = {"plan": plans["one"], "success_url": "https://partner.example/ok",
            "cancel_url": "https://partner.example/no"}

    def sessions() -> int:
        return sum(1 for params in lstripe.state.checkout_sessions if params["customer"] == customer)

    first, again = bclient.post(path, json=body), bclient.post(path, json=body)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json() and sessions() == 1
    # Another plan is another intent, and so is the same request once a subscription has been made.
    assert bclient.post(path, json={**body, "plan": plans["two"]}).json()["id"] != first.json()["id"]
    assert _subscribe(bclient, account, plans["one"]).status_code == 201
    assert bclient.post(path, json=body).json()["id"] != first.json()["id"]
    assert sessions() == 3
