"""The only module that talks to Stripe: the real ``stripe`` library, asynchronous, no hidden retries.

The library's own retries are off (``max_network_retries=0``): it never retries a plain 429,
and the reporter must decide per event whether a retry is safe (an attempt that may have
reached Stripe can only be repeated within Stripe's de-duplication window), so every retry
is ours, with backoff and jitter, and visible in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
import stripe

from app.billing.errors import StripeRejected, StripeUnavailable
from app.config import Settings
from app.errors import Conflict, InvalidRequest

log = logging.getLogger("ponyserve.billing.stripe")

# Stripe answers a repeated identifier with one of these (or silently de-duplicates): either way
# the event is recorded at Stripe, which is all the outbox needs to know.
_DUPLICATE_CODES = frozenset({"duplicate_meter_event", "resource_already_exists", "idempotency_key_in_use"})


@dataclass(frozen=True)
class SendResult:
    """What one meter-event request taught us.

    ``sent``: Stripe has the event. ``retry``: it may succeed later (network, timeout, 409, 429,
    5xx, bad credentials). ``rejected``: Stripe refused this event itself; the same request will
    never succeed. ``in_doubt``: the request may have been applied although we got no success
    answer (timeout after sending, 5xx), so a retry is only safe within the de-duplication window.
    """

    outcome: Literal["sent", "retry", "rejected"]
    in_doubt: bool = False
    error: str | None = None
    retry_after: float | None = None


def _never_reached_stripe(exc: stripe.APIConnectionError) -> bool:
    """True when the request provably never left this host (refused connection, connect timeout)."""
    cause = exc.__cause__
    return isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout)


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("retry-after") or (exc.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def classify(exc: Exception) -> SendResult:
    """Maps a failed meter-event request to what the outbox should do with the event."""
    if isinstance(exc, stripe.APIConnectionError):
        return SendResult("retry", in_doubt=not _never_reached_stripe(exc), error=f"network: {exc.user_message}")
    if isinstance(exc, stripe.StripeError):
        status = exc.http_status or 0
        code = exc.code or (exc.error.code if exc.error is not None else None)
        message = f"{status} {code or ''} {exc.user_message or ''}".strip()
        if status == 429:
            # Rate limiting happens before Stripe processes the request.
            return SendResult("retry", error=message, retry_after=_retry_after(exc))
        if status in (401, 403):
            # The deployment's key is wrong, not the event: keep it and retry once fixed.
            return SendResult("retry", error=message)
        if status == 409 or status >= 500:
            return SendResult("retry", in_doubt=True, error=message, retry_after=_retry_after(exc))
        if code in _DUPLICATE_CODES:
            return SendResult("sent")
        if 400 <= status < 500:
            return SendResult("rejected", error=message)
        return SendResult("retry", in_doubt=True, error=message)
    return SendResult("retry", in_doubt=True, error=f"{type(exc).__name__}: {exc}")


class StripeGateway:
    """A ``StripeClient`` on an asynchronous HTTPX transport, built once per process or reporter."""

    def __init__(self, settings: Settings) -> None:
        if settings.stripe_secret_key is None:
            raise ValueError("Stripe is not configured (PONYSERVE_STRIPE_SECRET_KEY)")
        self.settings = settings
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        bases: dict[str, str] = {}
        if settings.stripe_api_base:
            bases = {"api": settings.stripe_api_base, "meter_events": settings.stripe_api_base}
        self.client = stripe.StripeClient(
            settings.stripe_secret_key.get_secret_value(), base_addresses=bases,  # type: ignore[arg-type]
            max_network_retries=0, http_client=self._http,
        )

    async def close(self) -> None:
        await self._http.close_async()

    # -- usage ------------------------------------------------------------------------------

    async def send_meter_event(self, *, identifier: str, customer: str, value: int, timestamp: datetime
                               ) -> SendResult:
        try:
            await self.client.v1.billing.meter_events.create_async({
                "event_name": self.settings.stripe_meter_event_name,
                "identifier": identifier,
                "timestamp": int(timestamp.timestamp()),
                "payload": {"stripe_customer_id": customer, "value": str(value)},
            })
        except Exception as exc:
            return classify(exc)
        return SendResult("sent")

    async def meter_id(self) -> str:
        """The configured meter's id, or the active meter whose event_name is ours."""
        if self.settings.stripe_meter_id:
            return self.settings.stripe_meter_id
        async with translate_errors():
            meters = await self.client.v1.billing.meters.list_async({"status": "active", "limit": 100})
            async for meter in meters.auto_paging_iter():
                if meter.event_name == self.settings.stripe_meter_event_name:
                    return str(meter.id)
        raise InvalidRequest(f"No active Stripe meter has event_name '{self.settings.stripe_meter_event_name}'.",
                             code="stripe_meter_not_found")

    async def meter_total(self, meter_id: str, customer: str, start: datetime, end: datetime) -> float:
        """Stripe's aggregated meter value for one customer over [start, end) (minute-aligned)."""
        total = 0.0
        async with translate_errors():
            summaries = await self.client.v1.billing.meters.event_summaries.list_async(
                meter_id, {"customer": customer, "start_time": int(start.timestamp()),
                           "end_time": int(end.timestamp()), "limit": 100})
            async for summary in summaries.auto_paging_iter():
                total += float(summary.aggregated_value)
        return total

    # -- customers and subscriptions ----------------------------------------------------------

    async def create_customer(self, *, account_id: str, name: str, email: str | None) -> str:
        params: dict[str, Any] = {"name": name, "metadata": {"account_id": account_id}}
        if email:
            params["email"] = email
        async with translate_errors():
            # The same key for the same account: a retried request cannot create a second customer.
            customer = await self.client.v1.customers.create_async(
                params, {"idempotency_key": f"ponyserve-customer-{account_id}"})  # type: ignore[arg-type]
        return str(customer.id)

    async def customer_exists(self, customer_id: str) -> bool:
        try:
            async with translate_errors():
                customer = await self.client.v1.customers.retrieve_async(customer_id)
        except StripeRejected as exc:
            if exc.extra.get("stripe_status") == 404:
                return False
            raise
        return not bool(getattr(customer, "deleted", False))

    async def create_checkout_session(self, *, account_id: str, customer: str, line_items: list[dict[str, Any]],
                                      success_url: str, cancel_url: str, idempotency_key: str) -> dict[str, Any]:
        async with translate_errors():
            session = await self.client.v1.checkout.sessions.create_async({  # type: ignore[arg-type]
                "mode": "subscription", "customer": customer, "client_reference_id": account_id,
                "line_items": line_items, "success_url": success_url, "cancel_url": cancel_url,
                "metadata": {"account_id": account_id},
                "subscription_data": {"metadata": {"account_id": account_id}},
            }, {"idempotency_key": idempotency_key})
        return {"id": str(session.id), "url": session.url, "expires_at": session.expires_at}

    async def list_subscriptions(self, customer: str) -> list[dict[str, Any]]:
        """Every subscription of the customer, ended ones included, as plain dicts (as webhooks carry them)."""
        found: list[dict[str, Any]] = []
        async with translate_errors():
            page = await self.client.v1.subscriptions.list_async({"customer": customer, "status": "all", "limit": 100})
            async for sub in page.auto_paging_iter():
                found.append(sub.to_dict())
        return found

    async def create_subscription(self, *, account_id: str, customer: str, items: list[dict[str, Any]],
                                  idempotency_key: str) -> dict[str, Any]:
        async with translate_errors():
            sub = await self.client.v1.subscriptions.create_async({  # type: ignore[arg-type]
                "customer": customer, "items": items, "metadata": {"account_id": account_id},
                "payment_behavior": "default_incomplete",
            }, {"idempotency_key": idempotency_key})
        return {"id": str(sub.id), "status": str(sub.status)}


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Stripe's failures as our error tree: unreachable → 503 (retry later), refused → 502, a reused
    idempotency key with other parameters → 409."""
    try:
        yield
    except stripe.APIConnectionError as exc:
        raise StripeUnavailable(f"Stripe could not be reached: {exc.user_message}") from exc
    except stripe.IdempotencyError as exc:
        # Our keys name the intent (see service.py), so another request with another body got there first.
        raise Conflict("A different request for the same Stripe object came first; check the account's "
                       "billing state before retrying.", code="stripe_idempotency_conflict") from exc
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        if status == 429 or status >= 500:
            raise StripeUnavailable(f"Stripe is unavailable ({status}); try again shortly.") from exc
        raise StripeRejected(f"Stripe refused the request ({status}): {exc.user_message}",
                             extra={"stripe_status": status, "stripe_code": exc.code}) from exc
