"""One HTTP attempt at a webhook: POST the body to the checked address, and say how it went."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from app.webhooks.targets import Target

USER_AGENT = "ponyserve-webhooks/1.0"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    # Seconds the receiver asked us to wait (its Retry-After), if it said.
    retry_after: float | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver unsubscribed (Standard Webhooks); the endpoint is disabled."""
        return self.status_code == 410


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def new_client(timeout: float, concurrency: int) -> httpx.AsyncClient:
    # No redirects (a 3xx is a failed attempt: following it would leave the checked address), no
    # proxies or netrc from the environment (the connection must go where the check said).
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                             limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
                             headers={"user-agent": USER_AGENT})


async def post(client: httpx.AsyncClient, target: Target, body: str, headers: dict[str, str]) -> Outcome:
    started = time.perf_counter()
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        response = await client.post(target.pinned_url, content=body.encode(), extensions=extensions,
                                     headers={**headers, "host": target.host_header,
                                              "content-type": "application/json"})
        # The body is not needed; close without reading more than the receiver already sent.
        await response.aclose()
    except httpx.TimeoutException:
        return Outcome(None, None, "timed out", _ms(started))
    except httpx.HTTPError as exc:
        return Outcome(None, None, f"{type(exc).__name__}: {exc}"[:500], _ms(started))
    return Outcome(response.status_code, retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC)),
                   None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}", _ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
