"""Small pure pieces: how Stripe's answers steer the outbox, the billing CLI's refusals."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import stripe
from typer.testing import CliRunner

from app.billing.stripe_api import classify
from app.cli import cli
from app.config import get_settings


def _error(cls: type[stripe.StripeError], status: int, code: str | None = None) -> stripe.StripeError:
    body = {"error": {"type": "invalid_request_error", "message": "m", **({"code": code} if code else {})}}
    if cls is stripe.InvalidRequestError:
        return stripe.InvalidRequestError("m", None, code, json.dumps(body), status, body, {})
    return cls("m", json.dumps(body), status, body, {})


def _network(cause: Exception) -> stripe.APIConnectionError:
    try:
        raise stripe.APIConnectionError("network", should_retry=True) from cause
    except stripe.APIConnectionError as exc:
        return exc


@pytest.mark.parametrize(("exc", "outcome", "in_doubt"), [
    (_error(stripe.RateLimitError, 429), "retry", False),
    (_error(stripe.APIError, 500), "retry", True),
    (_error(stripe.APIError, 503), "retry", True),
    (_error(stripe.StripeError, 409), "retry", True),
    (_error(stripe.AuthenticationError, 401), "retry", False),
    (_error(stripe.PermissionError, 403), "retry", False),
    (_error(stripe.InvalidRequestError, 400, "parameter_invalid"), "rejected", False),
    (_error(stripe.InvalidRequestError, 400, "duplicate_meter_event"), "sent", False),
    (_network(httpx.ConnectError("refused")), "retry", False),
    (_network(httpx.ConnectTimeout("slow connect")), "retry", False),
    (_network(httpx.ReadTimeout("no answer")), "retry", True),
    (RuntimeError("unexpected"), "retry", True),
])
def test_stripe_answers_map_to_outbox_outcomes(exc: Exception, outcome: str, in_doubt: bool) -> None:
    result = classify(exc)
    assert (result.outcome, result.in_doubt) == (outcome, in_doubt)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The root logger as it was: the CLI's commands configure logging for the whole process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access, alembic = logging.getLogger("uvicorn.access"), logging.getLogger("alembic")
    access_disabled, alembic_level = access.disabled, alembic.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    access.disabled, alembic.level = access_disabled, alembic_level


@pytest.fixture
def unconfigured(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch, tmp_path, restored_logging: None
) -> Iterator[None]:
    monkeypatch.delenv("PONYSERVE_STRIPE_SECRET_KEY", raising=False)
    monkeypatch.setenv("PONYSERVE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_billing_cli_refuses_without_stripe_or_with_a_bad_month(unconfigured: None) -> None:
    runner = CliRunner()
    reporter = runner.invoke(cli, ["billing-reporter"])
    assert reporter.exit_code == 2 and "not configured" in reporter.output
    bad = runner.invoke(cli, ["billing", "reconcile", "--month", "2026-13"])
    assert bad.exit_code == 2
    assert json.loads(bad.output)["error"]["code"] == "invalid_month"


def test_logging_set_up_under_cli_runner_outlives_its_closed_streams(
    unconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # CliRunner swaps sys.stderr for a buffer while the command configures logging, then closes it.
    CliRunner().invoke(cli, ["billing-reporter"])
    logging.getLogger("ponyserve.tests").warning("logged after the command")
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert json.loads(err.splitlines()[-1])["event"] == "logged after the command"
