"""Standard Webhooks signatures: secrets, and the headers every attempt carries.

Signing goes through the ``standardwebhooks`` package, the same code partners verify with, so the
two sides cannot drift apart on encoding details (base64 padding, the timestamp format).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
# 24 random bytes (192 bits), inside the spec's 24–64 byte range.
_SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def signed_headers(message_id: str, body: str, secrets_in_use: Sequence[str], now: datetime) -> dict[str, str]:
    """The headers of one attempt: ``webhook-id`` (the message's, the same on every retry), the attempt's
    ``webhook-timestamp``, and one ``v1,`` signature per secret in use (two while a rotation overlaps)."""
    at = now.astimezone(UTC)
    signatures = " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets_in_use)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }
