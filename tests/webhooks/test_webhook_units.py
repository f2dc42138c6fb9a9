"""The pieces of webhook delivery that need no server: targets, the retry schedule, Retry-After, signatures."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.webhooks.deliveries import MAX_RETRY_AFTER_SECONDS, next_delay
from app.webhooks.sender import retry_after_seconds
from app.webhooks.signing import new_secret, signed_headers
from app.webhooks.targets import TargetRefused, parse, refusal, resolve

SPEC_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0]


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "fe80::1",
    "fd00:ec2::254", "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "192.0.2.1", "198.18.0.1", "240.0.0.1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "javascript:alert(1)", "https://user:pw@example.com/", "https:///nohost",
    "https://example.com/#frag", "http://[::1", "https://example.com:99999/", "https://" + "a" * 2100 + ".com/",
])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        parse(url)


async def test_a_name_that_resolves_to_loopback_is_refused_after_resolution() -> None:
    with pytest.raises(TargetRefused, match="loopback"):
        await resolve("http://localhost:9/hook", allow_private=False)
    allowed = await resolve("http://localhost:9/hook", allow_private=True)
    assert allowed.address.is_loopback and allowed.host_header == "localhost:9"
    assert allowed.pinned_url.startswith(f"http://{'[::1]' if allowed.address.version == 6 else '127.0.0.1'}:9/hook")


def test_the_schedule_is_the_specs_with_jitter() -> None:
    rng = random.Random(7)
    for attempt, base in enumerate(SPEC_SCHEDULE, start=1):
        delay = next_delay(attempt, SPEC_SCHEDULE, None, rng)
        assert delay is not None and base * 0.9 <= delay <= base * 1.1
    # The tenth failure (the first attempt plus nine retries) is the last.
    assert next_delay(len(SPEC_SCHEDULE) + 1, SPEC_SCHEDULE, None, rng) is None


def test_retry_after_replaces_the_scheduled_delay_up_to_a_day() -> None:
    assert next_delay(1, SPEC_SCHEDULE, 42.0) == 42.0
    assert next_delay(3, SPEC_SCHEDULE, 10 * 86400.0) == MAX_RETRY_AFTER_SECONDS
    assert next_delay(len(SPEC_SCHEDULE) + 1, SPEC_SCHEDULE, 1.0) is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Wed, 02 Dec 2026 12:01:30 GMT", now) == 90.0
    assert retry_after_seconds("Wed, 02 Dec 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_signatures_verify_with_standardwebhooks_and_both_secrets_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_") and old != new
    body = '{"type":"generation.succeeded","data":{"id":"gen_1"}}'
    headers = signed_headers("msg_1", body, (new, old), datetime.now(UTC))
    assert headers["webhook-id"] == "msg_1" and len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers)["data"]["id"] == "gen_1"
    assert Webhook(old).verify(body, headers)["data"]["id"] == "gen_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace("gen_1", "gen_2"), headers)
    stale = signed_headers("msg_1", body, (new,), datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, stale)
