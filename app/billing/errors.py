"""Billing's members of the application's error tree (rendered by app.errors like every other)."""

from __future__ import annotations

from app.errors import AppError, ServiceUnavailable


class PaymentRequired(AppError):
    """The account's invoice is unpaid past its grace period: its keys are refused until it is paid."""

    status_code = 402
    type = "billing_error"
    code = "billing_past_due"


class StripeUnavailable(ServiceUnavailable):
    """Stripe did not answer (network, timeout, 5xx, rate limit); the admin may simply retry."""

    code = "stripe_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StripeRejected(AppError):
    """Stripe refused the request itself (unknown customer, bad price…): retrying will not help."""

    status_code = 502
    type = "api_error"
    code = "stripe_error"
