"""Billing fixtures: fake Stripe servers on free ports, a shared database, a live server wired to a fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from billing_helpers import billing_settings
from fake_stripe import FakeStripe
from harness import LiveServer, bootstrap_admin, start_server


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    """A fake Stripe of this test's own (no other test's reporter can reach it)."""
    server = FakeStripe().start()
    yield server
    server.release.set()
    server.stop()


@pytest.fixture(scope="session")
def live_stripe() -> Iterator[FakeStripe]:
    """The fake Stripe the shared live server talks to."""
    server = FakeStripe().start()
    yield server
    server.release.set()
    server.stop()


@pytest.fixture
def lstripe(live_stripe: FakeStripe) -> Iterator[FakeStripe]:
    """The live server's fake, up and well-behaved again after the test whatever the test did to it."""
    yield live_stripe
    live_stripe.release.set()
    if live_stripe._server is None:
        live_stripe.start()
    with live_stripe.lock:
        live_stripe.script.clear()
        live_stripe.create_script.clear()
        live_stripe.gate = None
        live_stripe.rates = {}
        live_stripe.customer_modes = {}


@pytest.fixture(scope="session")
def billing_db(pg_factory) -> str:  # type: ignore[no-untyped-def]
    """One migrated Postgres database for the reporter tests. Each test makes its own accounts and
    leaves nothing pending, so tests sharing it stay independent (and the run creates few databases)."""
    url: str = pg_factory()
    return url


@pytest.fixture(scope="session")
def billing_live(pg_factory, demo_model_dir: Path, live_stripe: FakeStripe,  # type: ignore[no-untyped-def]
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """The service with its embedded worker and billing reporter, talking to the fake Stripe."""
    settings = billing_settings(pg_factory(), tmp_path_factory.mktemp("billing"), live_stripe,
                                demo_model_dir=demo_model_dir, billing_grace_period_seconds=2.0,
                                billing_reporter_sweep_seconds=0.5)
    admin = bootstrap_admin(settings)
    server = start_server(settings)
    yield server, admin
    server.stop()


@pytest.fixture
def bclient(billing_live: tuple[LiveServer, str]) -> Iterator[httpx.Client]:
    server, admin = billing_live
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
        yield c
