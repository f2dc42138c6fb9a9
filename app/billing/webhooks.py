"""Stripe webhook intake: verify the signature on the raw body, store the event once, apply it.

Verification follows Stripe's scheme: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`` where
each ``v1`` is HMAC-SHA256 of ``"{t}.{raw body}"`` under an endpoint secret. Any configured secret
may match any ``v1`` value (so a secret can be rotated without dropping deliveries), and ``t``
must be within the tolerance of our clock (a captured delivery cannot be replayed later).

The event is stored by its id before anything else (a redelivery finds it and only counts),
then processed in its own transaction that first takes the event row, so concurrent deliveries
of one event apply it once. If processing fails the delivery is still acknowledged: the event
is stored, and the billing reporter retries it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing import repository as repo
from app.billing import subscriptions
from app.billing.models import WebhookEvent
from app.config import Settings
from app.db import Database
from app.errors import InvalidRequest
from app.kit.clock import utcnow

log = logging.getLogger("ponyserve.billing.webhooks")

WEBHOOK_EVENTS = Counter("ponyserve_billing_webhook_events_total",
                         "Stripe webhook events processed in this process, by type and outcome.", ["type", "outcome"])
WEBHOOK_REJECTED = Counter("ponyserve_billing_webhook_rejected_total",
                           "Webhook deliveries refused before storage, by reason.", ["reason"])

HANDLED = ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
           "customer.subscription.paused", "customer.subscription.resumed", "invoice.paid",
           "invoice.payment_failed", "invoice.voided")


@dataclass(frozen=True)
class ReceivedEvent:
    id: str
    type: str
    created: int
    livemode: bool
    payload: dict[str, Any]


def _refuse(message: str, code: str) -> InvalidRequest:
    WEBHOOK_REJECTED.labels(code).inc()
    return InvalidRequest(message, code=code, param="Stripe-Signature")


def sign(raw: bytes, secret: str, timestamp: int) -> str:
    """A ``v1`` signature exactly as Stripe computes it."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()


def verify_signature(raw: bytes, header: str | None, secrets: list[str], *, tolerance: int,
                     now: float | None = None) -> int:
    """Checks ``Stripe-Signature`` against every configured secret; returns its timestamp.

    400 ``missing_signature`` / ``invalid_signature`` / ``stale_signature``; nothing is stored then.
    """
    if not secrets:
        raise _refuse("Stripe webhooks are not configured on this deployment.", "webhook_not_configured")
    if not header:
        raise _refuse("Missing Stripe-Signature header.", "missing_signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                timestamp = None
        elif key == "v1" and value:
            candidates.append(value.strip())
    if timestamp is None or not candidates:
        raise _refuse("Malformed Stripe-Signature header.", "invalid_signature")
    expected = [sign(raw, secret, timestamp) for secret in secrets]
    if not any(hmac.compare_digest(e, c) for e in expected for c in candidates):
        raise _refuse("No signature matches the payload.", "invalid_signature")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise _refuse("Signature timestamp outside the tolerance window.", "stale_signature")
    return timestamp


def parse_event(raw: bytes) -> ReceivedEvent:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The event is not valid JSON.", code="invalid_event") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The event is not a JSON object.", code="invalid_event")
    event_id, kind, created = body.get("id"), body.get("type"), body.get("created")
    data = body.get("data")
    if (not isinstance(event_id, str) or not event_id or len(event_id) > 255 or not isinstance(kind, str)
            or not kind or len(kind) > 100 or not isinstance(created, int) or isinstance(created, bool)
            or not isinstance(data, dict) or not isinstance(data.get("object"), dict)):
        raise InvalidRequest("The event lacks id, type, created or data.object.", code="invalid_event")
    return ReceivedEvent(id=event_id, type=kind, created=created, livemode=bool(body.get("livemode")), payload=body)


@dataclass(frozen=True)
class Receipt:
    event_id: str
    duplicate: bool
    # applied | stale | ignored | unknown_customer | duplicate, or None when processing failed and
    # the event waits for the reporter's retry.
    outcome: str | None


async def receive(db: Database, settings: Settings, raw: bytes, header: str | None) -> Receipt:
    secrets = [s.get_secret_value() for s in settings.stripe_webhook_secrets]
    verify_signature(raw, header, secrets, tolerance=settings.stripe_webhook_tolerance_seconds,
                     now=utcnow().timestamp())
    event = parse_event(raw)
    created = subscriptions.from_unix(event.created) or utcnow()
    async with db.unit_of_work() as session:
        customer = subscriptions.object_id(event.payload["data"]["object"].get("customer"))
        new = await repo.store_event(session, WebhookEvent(
            id=event.id, type=event.type, stripe_customer_id=customer, created=created, livemode=event.livemode,
            payload=event.payload, received_at=utcnow(), deliveries=1, attempts=0))
    outcome = await process_stored_event(db, settings, event.id)
    return Receipt(event_id=event.id, duplicate=not new, outcome=outcome)


async def process_stored_event(db: Database, settings: Settings, event_id: str) -> str | None:
    """Applies a stored event once; returns its outcome (also when it had been applied before)."""
    try:
        async with db.unit_of_work() as session:
            event = await repo.take_event(session, event_id)
            if event is None:
                done = await repo.event_outcome(session, event_id)
                return done.outcome if done is not None else None
            outcome = await apply_event(session, settings, event)
            await repo.finish_event(session, event_id, outcome=outcome, now=utcnow())
    except Exception as exc:
        log.exception("webhook event %s failed; it stays stored for a retry", event_id)
        async with db.unit_of_work() as session:
            await repo.event_failed(session, event_id, f"{type(exc).__name__}: {exc}")
        return None
    WEBHOOK_EVENTS.labels(event.type if event.type in HANDLED else "other", outcome).inc()
    log.info("webhook event", extra={"event_id": event_id, "type": event.type, "outcome": outcome})
    return outcome


async def apply_event(session: AsyncSession, settings: Settings, event: WebhookEvent) -> str:
    if event.type not in HANDLED:
        return "ignored"
    obj: dict[str, Any] = event.payload["data"]["object"]
    account = await subscriptions.account_for_customer(session, obj.get("customer"))
    if account is None:
        return "unknown_customer"
    if event.type.startswith("customer.subscription."):
        return await subscriptions.apply_subscription(session, settings, account, obj, event.type, event.created)
    if not isinstance(obj.get("id"), str):
        return "ignored"
    if event.type == "invoice.paid":
        return await subscriptions.invoice_paid(session, settings, account, obj, event.created)
    if event.type == "invoice.payment_failed":
        return await subscriptions.invoice_payment_failed(session, settings, account, obj, event.created)
    return await subscriptions.invoice_voided(session, settings, account, obj, event.created)
