"""The ``ponyserve`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.config import Settings, get_settings

if TYPE_CHECKING:
    from app.billing.reporter import BillingReporter
    from app.db import Database
    from app.observability.exporter import MetricsServer
    from app.storage.base import ImageStore
    from app.worker.worker import QueueWorker

cli = typer.Typer(help="ponyserve: a paid text-to-image API for Pony-Diffusion-family models.",
                  no_args_is_help=True, add_completion=False)
accounts_cli = typer.Typer(help="Manage customer accounts.", no_args_is_help=True)
keys_cli = typer.Typer(help="Manage API keys.", no_args_is_help=True)
billing_cli = typer.Typer(help="Stripe billing: reconciliation.", no_args_is_help=True)
cli.add_typer(accounts_cli, name="accounts")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(billing_cli, name="billing")

log = logging.getLogger("ponyserve.cli")


def _emit(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _prepare_embedded(settings: Settings) -> None:
    """Make a bare checkout servable: migrate the SQLite file, write the demo model."""
    from app.config import demo_lora_path
    from app.migrate import upgrade_head
    from app.runtime.demo_model import demo_model_exists, write_demo_model

    if settings.is_sqlite:
        upgrade_head(settings.database_url)
    if settings.models_file is None and not demo_model_exists(settings.resolved_demo_model_path):
        typer.echo(f"Writing the demo model to {settings.resolved_demo_model_path} …", err=True)
        write_demo_model(settings.resolved_demo_model_path)
    elif settings.models_file is None and not demo_lora_path(settings.resolved_demo_model_path).is_file():
        # A demo folder from before the demo LoRA existed: add it rather than rebuild the model.
        from app.runtime.demo_lora import write_demo_lora

        write_demo_lora(settings.resolved_demo_model_path)


async def _bootstrap(settings: Settings) -> str | None:
    from app.accounts.bootstrap import ensure_bootstrap_admin
    from app.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        async with db.unit_of_work() as session:
            return await ensure_bootstrap_admin(session)
    finally:
        await db.dispose()


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    embedded_worker: Annotated[bool, typer.Option(help="Run a worker inside the API process")] = True,
) -> None:
    """Serve the HTTP API (with an embedded worker unless --no-embedded-worker)."""
    import uvicorn

    from app.main import create_app
    from app.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(json=settings.log_json)
    _prepare_embedded(settings)
    token = asyncio.run(_bootstrap(settings))
    if token:
        typer.echo("=" * 72)
        typer.echo("Bootstrap admin key (scopes admin, generate, moderator). It is shown ONCE:")
        typer.echo(f"  {token}")
        typer.echo("=" * 72, err=False)
    app = create_app(settings, embedded_worker=embedded_worker)
    # proxy_headers off: forwarded headers are honoured only from PONYSERVE_TRUSTED_PROXIES, by the
    # service itself (app/context.py), not by uvicorn's loopback default.
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_config=None, proxy_headers=False,
                timeout_graceful_shutdown=int(settings.drain_timeout_seconds))


@cli.command()
def worker(
    device: Annotated[str | None, typer.Option(help="One device: cuda:0, cpu, …")] = None,
    devices: Annotated[str | None, typer.Option(help="Several devices, comma-separated: one child each")] = None,
    worker_id: Annotated[str | None, typer.Option(hidden=True, help="Set by the supervisor for its children")] = None,
) -> None:
    """Run queue workers against the configured database (usually Postgres)."""
    from app.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(json=settings.log_json)
    if devices:
        from app.worker.supervisor import supervise

        sys.exit(supervise([d.strip() for d in devices.split(",") if d.strip()], settings))
    asyncio.run(_run_worker(settings, device or settings.device, worker_id))


async def _run_worker(settings: Settings, device: str, worker_id: str | None = None) -> None:
    from app.db import Database
    from app.queue.notify import JobEvents, PgListener
    from app.runtime.registry import ModelRegistry
    from app.storage.factory import open_image_store
    from app.webhooks.dispatcher import WebhookDispatcher
    from app.worker.worker import QueueWorker

    db = Database(settings.database_url, pool_size=3)
    events = JobEvents()
    listener = None
    if db.is_postgres:
        listener = PgListener(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                              events)
        listener.start()
    qw = QueueWorker(db, settings, ModelRegistry(settings.model_specs(), device,
                                                        memory_budget_bytes=settings.model_memory_budget_bytes), events,
                     open_image_store(settings), device=device,
                     max_batch_images=settings.max_batch_images, worker_id=worker_id)
    await _attach_webhook_renderer(db, settings, qw.store)
    dispatcher = WebhookDispatcher(db, settings, name=qw.id)
    reporter = _billing_reporter(db, settings, qw.id)
    stop = _stop_all(qw.stop, dispatcher.stop, *([reporter.stop] if reporter is not None else []))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    exporter = None
    try:
        exporter = _worker_metrics(settings, qw, supervised=worker_id is not None)
        log.info("worker starting", extra={"worker_id": qw.id, "device": device,
                                           "metrics_port": exporter.port if exporter is not None else None})
        await asyncio.gather(qw.run(), dispatcher.run(), *([reporter.run()] if reporter is not None else []))
    finally:
        if exporter is not None:
            exporter.close()
        if listener is not None:
            await listener.stop()
        await db.dispose()


# Ports a supervisor's children may take from worker_metrics_port on: more GPUs than a host holds.
SUPERVISED_METRICS_PORTS = 16


def _worker_metrics(settings: Settings, qw: QueueWorker, *, supervised: bool) -> MetricsServer | None:
    """The worker's /metrics, /healthz and /readyz server with its GPU gauges, when a port is configured."""
    if settings.worker_metrics_port is None:
        return None
    from app.observability.exporter import start_metrics_server
    from app.observability.gpu import register_gpu_metrics

    register_gpu_metrics(qw.device, qw.id)
    return start_metrics_server(settings.worker_metrics_host, settings.worker_metrics_port,
                                token=settings.metrics_token, state=lambda: qw.state.value,
                                tries=SUPERVISED_METRICS_PORTS if supervised else 1)


def _billing_reporter(db: Database, settings: Settings, name: str) -> BillingReporter | None:
    """The usage reporter that runs beside a worker, when Stripe is configured."""
    if not settings.stripe_enabled:
        log.warning("Stripe is not configured: billable usage stays in the outbox")
        return None
    from app.billing.reporter import BillingReporter

    return BillingReporter(db, settings, name=name)


async def _attach_webhook_renderer(db: Database, settings: Settings, store: ImageStore) -> None:
    """The worker's transitions write webhook messages; they render jobs as the API does."""
    from app.generation.presentation import Presenter
    from app.storage.signing import UrlSigner, load_or_create_secret
    from app.webhooks.outbox import JobRenderer, attach

    async with db.unit_of_work() as session:
        secret = await load_or_create_secret(session)
    attach(db, JobRenderer(Presenter(UrlSigner(secret), store), settings.links_base))


def _stop_all(*stops: Callable[[], None]) -> Callable[[], None]:
    def stop() -> None:
        for fn in stops:
            fn()

    return stop


@cli.command("billing-reporter")
def billing_reporter() -> None:
    """Send billable usage to Stripe (also runs inside `ponyserve worker` and embedded `serve`)."""
    from app.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(json=settings.log_json)
    if not settings.stripe_enabled:
        typer.echo("Stripe is not configured (PONYSERVE_STRIPE_SECRET_KEY); nothing to report to.", err=True)
        raise typer.Exit(2)
    asyncio.run(_run_billing_reporter(settings))


async def _run_billing_reporter(settings: Settings) -> None:
    import app.models  # noqa: F401  (the reporter alone must still know every table)
    from app.billing.reporter import BillingReporter
    from app.db import Database

    db = Database(settings.database_url, pool_size=2)
    reporter = BillingReporter(db, settings, name="standalone")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, reporter.stop)
    try:
        await reporter.run()
    finally:
        await db.dispose()


@billing_cli.command("reconcile")
def billing_reconcile(
    month: Annotated[str, typer.Option(help="The month to reconcile, YYYY-MM (UTC)")],
    account: Annotated[str | None, typer.Option(help="Only this account (default: every account)")] = None,
) -> None:
    """Compare ledger, outbox and Stripe's meter totals per customer; prints JSON, exits 1 on discrepancies."""
    settings = get_settings()
    try:
        report = asyncio.run(_reconcile(settings, month, account))
    except Exception as exc:
        _fail(exc)
        return
    _emit(report)
    if not report["ok"]:
        raise typer.Exit(1)


async def _reconcile(settings: Settings, month: str, account: str | None) -> dict[str, object]:
    import app.models  # noqa: F401
    from app.billing.reconcile import reconcile
    from app.billing.stripe_api import StripeGateway
    from app.db import Database

    db = Database(settings.database_url, pool_size=1)
    gateway = StripeGateway(settings) if settings.stripe_enabled else None
    try:
        return await reconcile(db, settings, month, gateway, account_id=account)
    finally:
        if gateway is not None:
            await gateway.close()
        await db.dispose()


@cli.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade heads)."""
    from app.migrate import upgrade_head

    upgrade_head(get_settings().database_url)
    typer.echo("database is at the latest migration")


@cli.command("demo-model")
def demo_model(path: Annotated[Path, typer.Argument(help="Folder to write the pipeline into")]) -> None:
    """Write the tiny random SDXL-architecture demo pipeline (safetensors) and its demo LoRA
    (`ponyserve-loras/demo-style.safetensors` inside it, kohya layout), served as `demo-style`."""
    from app.runtime.demo_model import write_demo_model

    write_demo_model(path)
    typer.echo(str(path))


async def _with_session(fn):  # type: ignore[no-untyped-def]
    from app.db import Database

    db = Database(get_settings().database_url, pool_size=1)
    try:
        async with db.unit_of_work() as session:
            return await fn(session)
    finally:
        await db.dispose()


def _fail(exc: Exception) -> None:
    from app.errors import AppError

    if isinstance(exc, AppError):
        typer.echo(json.dumps(exc.body()), err=True)
        raise typer.Exit(2) from None
    raise exc


@accounts_cli.command("create")
def accounts_create(
    name: Annotated[str, typer.Option(help="Account name")],
    plan: Annotated[str, typer.Option(help="Plan code")] = "free",
) -> None:
    """Create an account; prints it as JSON."""
    from app.accounts.schemas import AccountOut
    from app.accounts.service import create_account

    async def run(session):  # type: ignore[no-untyped-def]
        return AccountOut.model_validate(await create_account(session, name=name, plan_code=plan))

    try:
        _emit(asyncio.run(_with_session(run)).model_dump(mode="json"))
    except Exception as exc:
        _fail(exc)


@keys_cli.command("create")
def keys_create(
    account: Annotated[str | None, typer.Option(help="Account id (default: the operator account, the one the "
                                                     "bootstrap admin key was made for)")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="generate, admin or moderator (repeatable)")] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
) -> None:
    """Create an API key; prints it as JSON. The `key` is shown only this once.

    Lost the bootstrap admin key? On a machine with the service's database settings,
    `ponyserve keys create --scope admin` mints a new admin key for the operator account."""
    from app.accounts.bootstrap import operator_account_id
    from app.accounts.schemas import KeyCreated, KeyOut
    from app.accounts.service import create_key
    from app.errors import InvalidRequest

    async def run(session):  # type: ignore[no-untyped-def]
        account_id = account or await operator_account_id(session)
        if account_id is None:
            raise InvalidRequest("No operator account yet (start `ponyserve serve` once); pass --account.",
                                 code="no_operator_account", param="account")
        key, token = await create_key(session, account_id=account_id, name=name, scopes=scope or ["generate"])
        return KeyCreated(**KeyOut.model_validate(key).model_dump(), key=token)

    try:
        _emit(asyncio.run(_with_session(run)).model_dump(mode="json"))
    except Exception as exc:
        _fail(exc)


@accounts_cli.command("list")
def accounts_list(
    search: Annotated[str | None, typer.Option(help="Only accounts whose name or id contains this")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="How many to skip")] = 0,
) -> None:
    """List accounts, oldest first, as JSON (the shape of GET /admin/accounts)."""
    from app.accounts.schemas import AccountList, AccountOut
    from app.accounts.service import search_accounts

    async def run(session):  # type: ignore[no-untyped-def]
        rows = await search_accounts(session, query=search, status=status, limit=limit, offset=offset)
        return AccountList(data=[AccountOut.model_validate(a) for a in rows], limit=limit, offset=offset)

    try:
        _emit(asyncio.run(_with_session(run)).model_dump(mode="json"))
    except Exception as exc:
        _fail(exc)


@keys_cli.command("list")
def keys_list(account: Annotated[str, typer.Option(help="Account id")]) -> None:
    """List an account's keys as JSON: prefixes, scopes, revocation; never secrets (only hashes are stored)."""
    from app.accounts.schemas import KeyOut
    from app.accounts.service import get_account, list_keys

    async def run(session):  # type: ignore[no-untyped-def]
        await get_account(session, account)
        return [KeyOut.model_validate(k).model_dump(mode="json") for k in await list_keys(session, account)]

    try:
        _emit(asyncio.run(_with_session(run)))
    except Exception as exc:
        _fail(exc)


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id (key_…)")]) -> None:
    """Revoke a key: its next request is refused, its unfinished jobs are cancelled (not charged). Prints JSON."""
    from app.accounts.schemas import KeyOut
    from app.accounts.service import revoke_key

    async def run(session):  # type: ignore[no-untyped-def]
        key, cancelled = await revoke_key(session, key_id)
        return {**KeyOut.model_validate(key).model_dump(mode="json"), "cancelled_jobs": cancelled}

    try:
        _emit(asyncio.run(_with_session(run)))
    except Exception as exc:
        _fail(exc)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
