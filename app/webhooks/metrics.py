"""Prometheus series for partner webhooks."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_ATTEMPTS = Counter(
    "ponyserve_webhook_attempts_total",
    "Webhook delivery attempts by outcome: succeeded, failed (retried or given up), gone (410), refused (target).",
    ["outcome"],
)
