"""Suspending an account or revoking a key stops its work and its signed image links, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from harness import Customer
from sqlalchemy import Engine, text

SLOW = {"prompt": "slow pony", "size": "512x512", "steps": 50}
QUICK = {"prompt": "a pony in a meadow", "size": "64x64", "steps": 1, "response_format": "url"}


def _admin(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def _start_running_job(client: httpx.Client, customer: Customer) -> str:
    """Submits a slow job and returns its id once a worker is generating it."""
    created = client.post("/v1/generations", headers=customer.headers, json=SLOW)
    assert created.status_code == 202, created.text
    job_id: str = created.json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/generations/{job_id}", headers=customer.headers).json()["status"] != "running":
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.1)
    return job_id


def _job_status(pg_engine: Engine, job_id: str) -> str:
    with pg_engine.connect() as conn:
        return str(conn.execute(text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one())


def _worker_moved_on(client: httpx.Client, bystander: Customer) -> None:
    """The embedded worker runs one batch at a time: once another account's job is done, it has finished
    with (and lost every transition of) the cancelled one."""
    made = client.post("/v1/images/generations", headers=bystander.headers, json=QUICK)
    assert made.status_code == 200, made.text


def _assert_not_charged(pg_engine: Engine, customer: Customer, job_id: str) -> None:
    """Settled cancelled for good: no ledger row, nothing used or reserved on the account's or key's counters."""
    with pg_engine.connect() as conn:
        counters = conn.execute(
            text("SELECT scope, used, reserved FROM quota_counters WHERE scope_id IN (:a, :k)"),
            {"a": customer.account_id, "k": customer.key_id},
        ).all()
        ledger = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"), {"j": job_id}).scalar()
    assert _job_status(pg_engine, job_id) == "cancelled"
    assert ledger == 0
    assert counters, "the job reserved nothing?"
    assert all((used, reserved) == (0, 0) for _scope, used, reserved in counters), counters


def _signed_url(client: httpx.Client, customer: Customer) -> str:
    made = client.post("/v1/images/generations", headers=customer.headers, json=QUICK)
    assert made.status_code == 200, made.text
    url: str = made.json()["data"][0]["url"]
    assert client.get(url).status_code == 200
    return url


def _assert_link_revoked(client: httpx.Client, url: str) -> None:
    refused = client.get(url)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "image_link_revoked"


def test_suspending_an_account_cancels_its_running_job_uncharged(
    client: httpx.Client, make_customer: Callable[..., Customer], admin_key: str, pg_engine: Engine
) -> None:
    customer = make_customer(plan="internal")
    job_id = _start_running_job(client, customer)

    patched = client.patch(f"/admin/accounts/{customer.account_id}", json={"status": "suspended"},
                           headers=_admin(admin_key))
    assert patched.status_code == 200, patched.text

    # Cancelled in the suspension's own transaction, not at the worker's leisure.
    assert _job_status(pg_engine, job_id) == "cancelled"
    _worker_moved_on(client, make_customer())
    _assert_not_charged(pg_engine, customer, job_id)


def test_a_signed_link_stops_working_once_the_account_is_suspended(
    client: httpx.Client, customer: Customer, admin_key: str
) -> None:
    url = _signed_url(client, customer)
    client.patch(f"/admin/accounts/{customer.account_id}", json={"status": "suspended"},
                 headers=_admin(admin_key)).raise_for_status()
    _assert_link_revoked(client, url)
    # Reinstated, the same link works again until it expires.
    client.patch(f"/admin/accounts/{customer.account_id}", json={"status": "active"},
                 headers=_admin(admin_key)).raise_for_status()
    assert client.get(url).status_code == 200


def test_revoking_a_key_cancels_its_jobs_and_its_signed_links(
    client: httpx.Client, make_customer: Callable[..., Customer], admin_key: str, pg_engine: Engine
) -> None:
    customer = make_customer(plan="internal")
    url = _signed_url(client, customer)
    job_id = _start_running_job(client, customer)

    revoked = client.delete(f"/admin/keys/{customer.key_id}", headers=_admin(admin_key))
    assert revoked.status_code == 200, revoked.text

    assert _job_status(pg_engine, job_id) == "cancelled"
    _assert_link_revoked(client, url)
    _worker_moved_on(client, make_customer())
    with pg_engine.connect() as conn:
        ledger = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"), {"j": job_id}).scalar()
    assert ledger == 0


def test_a_non_ascii_signature_is_an_invalid_signature_not_a_500(client: httpx.Client) -> None:
    answer = client.get("/v1/images/img_x", params={"expires": "99999999999", "sig": "é"})
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "invalid_signature"


def test_verify_refuses_malformed_signatures() -> None:
    from app.storage.signing import UrlSigner

    signer = UrlSigner(b"k" * 32)
    query = signer.query("img_1", now=1000.0)
    expires, sig = (part.split("=", 1)[1] for part in query.split("&"))
    assert signer.verify("img_1", int(expires), sig, now=1000.0)
    for bad in ("é", "\x00", "", sig[:-1], sig + "0", "ü" * len(sig)):
        assert not signer.verify("img_1", int(expires), bad, now=1000.0)
