"""Partner webhooks end to end: a live service, a real HTTP receiver, Postgres between them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Customer, LiveServer, bootstrap_admin, make_settings, new_customer, start_server
from receiver import Receiver, Reply
from standardwebhooks import Webhook

FAST = {"prompt": "a pony", "size": "64x64", "steps": 1}


class Service:
    """One database; servers on it can be stopped and started again (a restart between attempts)."""

    def __init__(self, database_url: str, tmp_path: Path, demo_model_dir: Path) -> None:
        self.database_url, self.tmp_path, self.demo_model_dir = database_url, tmp_path, demo_model_dir
        self.server: LiveServer | None = None
        self.admin_key: str | None = None

    def start(self, *, embedded_worker: bool = True, **overrides: Any) -> LiveServer:
        settings = make_settings(self.database_url, self.tmp_path / "var", self.demo_model_dir,
                                 **{"webhook_allow_private": True, "webhook_retry_schedule": [0.3] * 4,
                                    "webhook_timeout_seconds": 5.0, **overrides})
        self.server = start_server(settings, embedded_worker=embedded_worker)
        if self.admin_key is None:
            self.admin_key = bootstrap_admin(settings)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> httpx.Client:
        assert self.server is not None
        return httpx.Client(base_url=self.server.url, timeout=60)

    def customer(self) -> Customer:
        assert self.admin_key is not None
        with self.client() as c:
            return new_customer(c, self.admin_key)


@pytest.fixture
def service(pg_factory, tmp_path: Path, demo_model_dir: Path) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    svc = Service(pg_factory(), tmp_path, demo_model_dir)
    yield svc
    svc.stop()


def register(client: httpx.Client, who: Customer, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url} if events is None else {"url": url, "events": events}
    created = client.post("/v1/webhooks", json=body, headers=who.headers)
    assert created.status_code == 201, created.text
    return created.json()


def generate(client: httpx.Client, who: Customer, **extra: Any) -> dict[str, Any]:
    job = client.post("/v1/generations", json={**FAST, **extra}, headers={**who.headers, "Prefer": "wait=60"})
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "succeeded"
    return job.json()


def deliveries(client: httpx.Client, who: Customer, webhook_id: str) -> list[dict[str, Any]]:
    log = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=who.headers)
    assert log.status_code == 200, log.text
    return log.json()["data"]


def wait_deliveries(client: httpx.Client, who: Customer, webhook_id: str, done: Any,
                    timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = deliveries(client, who, webhook_id)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def without_link_signatures(job: dict[str, Any]) -> dict[str, Any]:
    """Signed links carry their own expiry, so two renderings differ there; everything else must match."""
    copy = json.loads(json.dumps(job))
    for output in copy["outputs"]:
        if output["url"]:
            output["url"] = output["url"].split("?")[0].split("/v1/")[1]
    return copy


def test_job_events_arrive_signed_in_order_carrying_the_job(service: Service) -> None:
    service.start()
    who = service.customer()
    with Receiver() as receiver, service.client() as client:
        hook = register(client, who, receiver.url)
        assert hook["secret"].startswith("whsec_") and hook["events"] is None and hook["status"] == "enabled"
        job = generate(client, who, metadata={"order": "42"})
        got = receiver.wait_for(lambda r: len(r) >= 2)
        bodies = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in got]
        assert [b["type"] for b in bodies] == ["generation.started", "generation.succeeded"]
        assert len({r.webhook_id for r in got}) == 2
        started, succeeded = bodies[0]["data"], bodies[1]["data"]
        assert started["id"] == succeeded["id"] == job["id"]
        assert started["status"] == "running" and started["outputs"] == []
        assert succeeded["status"] == "succeeded" and succeeded["metadata"] == {"order": "42"}
        now = client.get(f"/v1/generations/{job['id']}", headers=who.headers).json()
        assert without_link_signatures(succeeded) == without_link_signatures(now)
        # The listing never shows the secret again.
        listed = client.get("/v1/webhooks", headers=who.headers).json()["data"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]


def test_failed_attempts_are_retried_under_the_same_webhook_id(service: Service) -> None:
    service.start()
    who = service.customer()
    with Receiver(replies=[Reply(500), Reply(503)]) as receiver, service.client() as client:
        hook = register(client, who, receiver.url, events=["generation.succeeded"])
        generate(client, who)
        got = receiver.wait_for(lambda r: len(r) >= 3)
        assert len({r.webhook_id for r in got}) == 1
        assert len({r.body for r in got}) == 1
        for attempt in got:
            assert Webhook(hook["secret"]).verify(attempt.body, attempt.headers)["type"] == "generation.succeeded"
        [delivery] = wait_deliveries(client, who, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
        assert delivery["attempts"] == 3 and delivery["webhook_id"] == got[0].webhook_id
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]


def test_retry_after_is_honoured(service: Service) -> None:
    service.start(webhook_retry_schedule=[120.0])
    who = service.customer()
    with Receiver(replies=[Reply(503, {"Retry-After": "1"})]) as receiver, service.client() as client:
        register(client, who, receiver.url, events=["generation.succeeded"])
        generate(client, who)
        first, second = receiver.wait_for(lambda r: len(r) >= 2, timeout=30)
        # The schedule said two minutes; the receiver asked for one second.
        assert 0.9 <= second.at - first.at < 60


def test_a_receiver_answering_410_disables_its_endpoint(service: Service) -> None:
    service.start()
    who = service.customer()
    with Receiver(default=Reply(410)) as receiver, service.client() as client:
        hook = register(client, who, receiver.url, events=["generation.succeeded"])
        generate(client, who)
        receiver.wait_for(lambda r: len(r) >= 1)
        [delivery] = wait_deliveries(client, who, hook["id"], lambda rows: rows and rows[0]["status"] == "failed")
        assert delivery["attempts"] == 1 and delivery["last_status_code"] == 410
        endpoint = client.get(f"/v1/webhooks/{hook['id']}", headers=who.headers).json()
        assert endpoint["status"] == "disabled" and "410" in endpoint["disabled_reason"]
        generate(client, who)
        time.sleep(1.5)
        assert len(receiver.received) == 1
        resend = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/resend", headers=who.headers)
        assert resend.status_code == 409 and resend.json()["error"]["code"] == "webhook_disabled"


def test_nothing_is_lost_when_the_service_restarts_between_attempts(service: Service) -> None:
    service.start(webhook_retry_schedule=[3.0])
    who = service.customer()
    with Receiver(replies=[Reply(500)]) as receiver:
        with service.client() as client:
            hook = register(client, who, receiver.url, events=["generation.succeeded"])
            generate(client, who)
        [first] = receiver.wait_for(lambda r: len(r) >= 1)
        service.stop()
        service.start(webhook_retry_schedule=[3.0])
        with service.client() as client:
            _, retried = receiver.wait_for(lambda r: len(r) >= 2, timeout=30)
            assert retried.webhook_id == first.webhook_id and retried.body == first.body
            assert Webhook(hook["secret"]).verify(retried.body, retried.headers)
            [delivery] = wait_deliveries(client, who, hook["id"], lambda rows: rows[0]["status"] == "succeeded")
            assert delivery["attempts"] == 2


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/hook", "http://0.0.0.0/", "http://[fd00:ec2::254]/",
    "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/", "ftp://1.1.1.1/", "http://user:secret@1.1.1.1/",
])
def test_private_and_malformed_targets_are_refused_at_registration(live: LiveServer, client: httpx.Client,
                                                                   customer: Customer, url: str) -> None:
    assert live.settings.webhook_allow_private is False
    refused = client.post("/v1/webhooks", json={"url": url}, headers=customer.headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_webhook_url" and refused.json()["error"]["param"] == "url"
    assert client.get("/v1/webhooks", headers=customer.headers).json()["data"] == []


def test_a_private_target_is_refused_again_at_delivery(service: Service) -> None:
    service.start()
    who = service.customer()
    with Receiver() as receiver:
        with service.client() as client:
            hook = register(client, who, receiver.url, events=["generation.succeeded"])
        # The operator turns private targets off: an endpoint registered before is checked at every delivery.
        service.stop()
        service.start(webhook_allow_private=False)
        with service.client() as client:
            generate(client, who)
            [delivery] = wait_deliveries(client, who, hook["id"], lambda rows: rows and rows[0]["status"] == "failed")
        assert "target refused" in delivery["last_error"] and "loopback" in delivery["last_error"]
        assert receiver.received == []


def test_a_slow_receiver_does_not_hold_up_another_partners_deliveries(service: Service) -> None:
    service.start(webhook_timeout_seconds=6.0)
    slow_partner, other_partner = service.customer(), service.customer()
    with Receiver(default=Reply(200, delay=8.0)) as slow, Receiver() as fast, service.client() as client:
        register(client, slow_partner, slow.url)
        register(client, other_partner, fast.url)
        generate(client, slow_partner, n=2)
        generate(client, slow_partner)
        [stuck] = slow.wait_for(lambda r: len(r) >= 1)
        generate(client, other_partner)
        got = fast.wait_for(lambda r: len(r) >= 2)
        # Both of the other partner's messages arrived while the slow receiver still held its first one.
        assert got[1].at - stuck.at < 6.0
        assert len(slow.received) == 1


def test_a_rotated_secret_signs_beside_the_new_one(service: Service) -> None:
    service.start()
    who = service.customer()
    with Receiver() as receiver, service.client() as client:
        hook = register(client, who, receiver.url, events=["generation.succeeded"])
        rotated = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=who.headers)
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != hook["secret"] and rotated.json()["previous_secret_expires_at"] is not None
        generate(client, who)
        [got] = receiver.wait_for(lambda r: len(r) >= 1)
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert Webhook(new_secret).verify(got.body, got.headers)
        assert Webhook(hook["secret"]).verify(got.body, got.headers)


def test_a_delivery_can_be_resent_by_hand(service: Service) -> None:
    service.start()
    who = service.customer()
    with Receiver() as receiver, service.client() as client:
        hook = register(client, who, receiver.url, events=["generation.succeeded"])
        generate(client, who)
        [first] = receiver.wait_for(lambda r: len(r) >= 1)
        [delivery] = wait_deliveries(client, who, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
        resend = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/resend", headers=who.headers)
        assert resend.status_code == 202, resend.text
        _, again = receiver.wait_for(lambda r: len(r) >= 2)
        assert again.webhook_id == first.webhook_id and again.body == first.body
        [delivery] = wait_deliveries(client, who, hook["id"], lambda rows: rows[0]["status"] == "succeeded")
        assert len(delivery["attempt_log"]) == 2


def test_a_cancelled_job_sends_generation_cancelled(service: Service) -> None:
    service.start(embedded_worker=False)
    who = service.customer()
    with Receiver() as receiver, service.client() as client:
        register(client, who, receiver.url)
        job = client.post("/v1/generations", json=FAST, headers=who.headers).json()
        assert job["status"] == "queued"
        assert client.post(f"/v1/generations/{job['id']}/cancel", headers=who.headers).status_code == 200
        [got] = receiver.wait_for(lambda r: len(r) >= 1)
        body = json.loads(got.body)
        assert body["type"] == "generation.cancelled" and body["data"]["status"] == "cancelled"
        assert body["data"]["error"]["code"] == "cancelled"


def test_endpoints_are_private_to_their_account(service: Service) -> None:
    service.start()
    owner, stranger = service.customer(), service.customer()
    with Receiver() as receiver, service.client() as client:
        hook = register(client, owner, receiver.url, events=["generation.succeeded"])
        for method, path in [("GET", f"/v1/webhooks/{hook['id']}"), ("DELETE", f"/v1/webhooks/{hook['id']}"),
                             ("POST", f"/v1/webhooks/{hook['id']}/rotate-secret"),
                             ("GET", f"/v1/webhooks/{hook['id']}/deliveries")]:
            assert client.request(method, path, headers=stranger.headers).status_code == 404
        assert client.get("/v1/webhooks", headers=stranger.headers).json()["data"] == []
        # The stranger's jobs never reach the owner's endpoint; the owner's succeeded-only filter holds.
        generate(client, stranger)
        generate(client, owner)
        receiver.wait_for(lambda r: len(r) >= 1)
        time.sleep(1.0)
        assert receiver.events() == ["generation.succeeded"]
        assert client.delete(f"/v1/webhooks/{hook['id']}", headers=owner.headers).status_code == 204
        assert client.get(f"/v1/webhooks/{hook['id']}", headers=owner.headers).status_code == 404
