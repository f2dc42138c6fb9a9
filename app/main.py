"""create_app(): routers, middleware, error handlers, and the lifespan that wires it all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError

from app.admin.endpoints import router as admin_router
from app.billing.endpoints import router as billing_router
from app.billing.endpoints import webhooks_router as billing_webhooks_router
from app.billing.metrics import stop_task
from app.billing.reporter import BillingReporter
from app.billing.stripe_api import StripeGateway
from app.compat.endpoints import router as compat_router
from app.config import Settings, get_settings
from app.console import install as install_console
from app.context import AppContext
from app.db import Database
from app.errors import install_error_handlers
from app.generation.catalog import LoraCatalog, ModelCatalog
from app.generation.endpoints import router as generation_router
from app.generation.events import router as generation_events_router
from app.generation.presentation import Presenter
from app.kit.allow_header import AllowHeaderMiddleware
from app.kit.clock import utcnow
from app.kit.input_policy import InputPolicyMiddleware
from app.licensing import service as licensing
from app.licensing.endpoints import router as licensing_router
from app.metering.endpoints import router as usage_router
from app.moderation.endpoints import router as moderation_router
from app.moderation.service import Moderator, build_policy
from app.moderation.service import attach as attach_moderator
from app.moderation.service import detach as detach_moderator
from app.observability.endpoints import refresh_metrics_loop
from app.observability.endpoints import router as ops_router
from app.observability.fleet import FLEET
from app.observability.middleware import RequestMiddleware
from app.observability.security import ErrorBoundaryMiddleware, SecurityHeadersMiddleware
from app.queue.notify import JobEvents, PgListener
from app.storage.factory import open_image_store
from app.storage.signing import UrlSigner, load_or_create_secret
from app.webhooks.dispatcher import WebhookDispatcher
from app.webhooks.endpoints import router as webhooks_router
from app.webhooks.outbox import JobRenderer
from app.webhooks.outbox import attach as attach_webhook_renderer
from app.webhooks.outbox import detach as detach_webhook_renderer

log = logging.getLogger("ponyserve.app")

DESCRIPTION = """
Text-to-image generation from Pony-Diffusion-family models, metered per image.

Authenticate with `Authorization: Bearer <key>`. Errors always have the shape
`{"error": {"type", "code", "message", "param"}}`.
"""


async def sync_licenses(db: Database, settings: Settings) -> None:
    """Records licence terms from the models file as new versions when they changed."""
    try:
        async with db.unit_of_work() as session:
            changed = await licensing.sync_from_specs(session, settings.license_specs(), utcnow())
        if changed:
            log.info("licence terms recorded", extra={"licenses": changed})
    except IntegrityError:
        log.info("another replica recorded the licence terms first")


def _metrics_interval(settings: Settings) -> float:
    # The older billing-only setting, where a deployment (or test) set it, still shortens the interval.
    if "billing_metrics_refresh_seconds" in settings.model_fields_set:
        return min(settings.metrics_refresh_seconds, settings.billing_metrics_refresh_seconds)
    return settings.metrics_refresh_seconds


# Swagger UI and ReDoc assets shipped in the fastapi-offline wheel: the API reference works
# without internet access and loads nothing from third parties.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"


def _install_offline_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
                                   swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                                   # No badge fetched from validator.swagger.io: nothing leaves the page.
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False)


# The body limit of routes that carry an uploaded image: app.generation.uploads' limit in base64, and some room.
IMAGE_BODY_BYTES = 32 * 1024 * 1024

def create_app(settings: Settings | None = None, *, embedded_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        events = JobEvents()
        async with db.unit_of_work() as session:
            secret = await load_or_create_secret(session)
        await sync_licenses(db, settings)
        store = open_image_store(settings)
        catalog = ModelCatalog(settings.model_specs(), LoraCatalog(settings.lora_specs))
        # Built before serving: an unreadable operator word list stops start-up instead of
        # running with less moderation than configured.
        moderator = Moderator(db, settings, await asyncio.to_thread(build_policy, settings, catalog.specs()))
        await moderator.refresh(force=True)
        attach_moderator(db, moderator)
        moderator.start()
        presenter = Presenter(UrlSigner(secret), store)
        # Webhook messages written here (a cancel, an embedded worker's transitions) render jobs with it.
        attach_webhook_renderer(db, JobRenderer(presenter, settings.links_base))
        app.state.db = db
        app.state.ctx = AppContext(settings=settings, db=db, catalog=catalog, events=events, store=store,
                                   presenter=presenter, fleet=FLEET, moderation=moderator)
        listener = None
        if db.is_postgres:
            listener = PgListener(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                                  events)
            listener.start()
        # Billing: the Stripe client for admin calls, fresh outbox gauges, and in embedded mode the
        # usage reporter beside the worker (standalone deployments run it in `ponyserve worker`).
        app.state.stripe = StripeGateway(settings) if settings.stripe_enabled else None
        # One task re-reads every database-backed gauge, so a scrape does no database work.
        metrics_refresher = asyncio.create_task(refresh_metrics_loop(app.state.ctx, _metrics_interval(settings)),
                                                name="metrics-refresh")
        # Every API process also sends the webhook outbox: dispatchers share it through leases.
        dispatcher = WebhookDispatcher(db, settings, name="api")
        dispatcher_task = asyncio.create_task(dispatcher.run(), name="webhook-dispatcher")
        reporter = reporter_task = None
        worker_task = worker = None
        if embedded_worker:
            from app.runtime.registry import ModelRegistry
            from app.worker.worker import QueueWorker

            registry = ModelRegistry(catalog.specs(), settings.device,
                                     memory_budget_bytes=settings.model_memory_budget_bytes)
            worker = QueueWorker(db, settings, registry, events, store,
                                 device=settings.device, max_batch_images=settings.max_batch_images)
            worker_task = asyncio.create_task(worker.run(), name="embedded-worker")
            if settings.stripe_enabled:
                reporter = BillingReporter(db, settings, name="embedded")
                reporter_task = asyncio.create_task(reporter.run(), name="billing-reporter")
        try:
            yield
        finally:
            if worker is not None and worker_task is not None:
                worker.stop()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker_task, timeout=settings.drain_timeout_seconds)
            # Whatever is still pending stays in the outbox for the next reporter.
            if reporter is not None and reporter_task is not None:
                reporter.stop()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(reporter_task, timeout=settings.stripe_timeout_seconds + 5)
            dispatcher.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(dispatcher_task, timeout=settings.webhook_timeout_seconds + 5)
            await stop_task(metrics_refresher)
            if app.state.stripe is not None:
                await app.state.stripe.close()
            if listener is not None:
                await listener.stop()
            await moderator.stop()
            detach_moderator(db)
            detach_webhook_renderer(db)
            await db.dispose()

    app = FastAPI(
        title="ponyserve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served below from packaged files instead of FastAPI's CDN defaults.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # Last added runs first: security headers around everything (413s included), then request
    # ids and the request log, then the error boundary, so an unexpected error is logged with
    # its request id and answered as a 500 that the request log sees.
    app.add_middleware(ErrorBoundaryMiddleware)
    # Inside the request middleware, so their refusals are logged and measured like any response.
    app.add_middleware(AllowHeaderMiddleware)
    app.add_middleware(InputPolicyMiddleware)
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes,
                       path_limits={"/webhooks/stripe": 1024 * 1024, "/admin/optouts/import": 8 * 1024 * 1024,
                                    "/console/moderation/optouts/import": 8 * 1024 * 1024 + 64 * 1024,
                                    # Routes that take an image, base64 in JSON (4/3 of its size).
                                    **dict.fromkeys(("/sdapi/v1/png-info", "/sdapi/v1/img2img", "/v1/generations",
                                                     "/v1/images/generations", "/v1/images/edits"), IMAGE_BODY_BYTES)})
    app.add_middleware(SecurityHeadersMiddleware)
    _install_offline_docs(app)
    app.include_router(generation_router)
    app.include_router(generation_events_router)
    app.include_router(compat_router)
    app.include_router(admin_router)
    app.include_router(usage_router)
    app.include_router(moderation_router)
    app.include_router(licensing_router)
    app.include_router(billing_router)
    app.include_router(billing_webhooks_router)
    app.include_router(webhooks_router)
    app.include_router(ops_router)
    install_console(app)
    return app
