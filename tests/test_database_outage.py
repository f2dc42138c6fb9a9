"""The database goes away: every route answers 503 with Retry-After (never 500), and the service —
API and embedded worker — comes back by itself once the database accepts connections again.

The outage is real: the test's own database stops accepting connections and its sessions are
terminated (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``); no other database is touched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from harness import Customer, bootstrap_admin, free_port, make_settings, new_customer, start_server
from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, SessionDep
from app.errors import install_error_handlers, is_database_unavailable
from app.observability.middleware import RequestMiddleware

ADMIN_URL = os.environ.get("PONYSERVE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# Long enough for the worker's backoff to reach its cap and every lease to expire meanwhile.
OUTAGE_SECONDS = 15.0
# What "within a few seconds" means once the database is back.
RECOVERY_SECONDS = 8.0
# Short leases, so a job stranded by the outage is recovered quickly once the database returns.
LEASE_SECONDS = 3.0
TERMINAL = ("succeeded", "failed", "cancelled")


# -- plumbing ------------------------------------------------------------------------------------


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=True, connect_timeout=5)


def _set_reachable(database_url: str, reachable: bool) -> None:
    """Opens or closes only the test's own database; closing also ends its open sessions."""
    name = make_url(database_url).database
    assert name is not None and name.startswith("ponyserve_test_"), name
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


@contextmanager
def _outage(database_url: str) -> Iterator[None]:
    _set_reachable(database_url, False)
    try:
        yield
    finally:
        _set_reachable(database_url, True)


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """Any ASGI app over real HTTP (uvicorn in a thread), so the whole middleware stack runs."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _assert_unavailable(r: httpx.Response) -> None:
    """The documented outage answer: 503, a positive Retry-After, the standard error object."""
    assert r.status_code == 503, (r.request.method, r.request.url.path, r.status_code, r.text)
    assert int(r.headers["retry-after"]) > 0
    error = r.json()["error"]
    assert error == {"type": "server_error", "code": "service_unavailable",
                     "message": "The database is unreachable; retry shortly.", "param": None}, error


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


def _status(client: httpx.Client, cust: Customer, job_id: str) -> str:
    r = client.get(f"/v1/generations/{job_id}", headers=cust.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


# -- which errors count as an outage ---------------------------------------------------------------


def _wrapped(cls: type[sa_exc.DBAPIError], orig: BaseException, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(("exc", "outage"), [
    (_wrapped(sa_exc.OperationalError, psycopg.OperationalError("connection failed: Connection refused")), True),
    (_wrapped(sa_exc.OperationalError, psycopg.errors.AdminShutdown()), True),
    (_wrapped(sa_exc.OperationalError, psycopg.errors.TooManyConnections()), True),
    (_wrapped(sa_exc.InterfaceError, psycopg.InterfaceError("the connection is closed")), True),
    (_wrapped(sa_exc.DBAPIError, psycopg.Error("server closed the connection"), invalidated=True), True),
    (sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"), True),
    (psycopg.OperationalError("connection failed: database is not currently accepting connections"), True),
    (_wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")), True),
    # Bugs and bad input keep their 500 (or their own handler) and their traceback.
    (_wrapped(sa_exc.IntegrityError, psycopg.errors.UniqueViolation()), False),
    (_wrapped(sa_exc.DataError, psycopg.errors.NumericValueOutOfRange()), False),
    (_wrapped(sa_exc.ProgrammingError, psycopg.errors.UndefinedTable()), False),
    (_wrapped(sa_exc.OperationalError, psycopg.errors.DeadlockDetected()), False),
    (_wrapped(sa_exc.OperationalError, sqlite3.OperationalError("no such table: jobs")), False),
    (OSError("No space left on device"), False),
    (ValueError("boom"), False),
])
def test_what_counts_as_the_database_being_unavailable(exc: BaseException, outage: bool) -> None:
    assert is_database_unavailable(exc) is outage


# -- where the error is raised: dependency commit, route, middleware ----------------------------


def _wiring_app(database_url: str, dead_url: str) -> FastAPI:
    """A minimal app with the real error handlers, request middleware and session dependency."""

    dead = Database(dead_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(database_url)
        yield
        await app.state.db.dispose()
        await dead.dispose()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.middleware("http")
    async def touches_database(request: Any, call_next: Any) -> Any:
        # A BaseHTTPMiddleware: what it raises escapes Starlette's per-class exception handlers.
        if request.url.path == "/middleware":
            async with dead.unit_of_work() as session:
                await session.execute(text("SELECT 1"))
        return await call_next(request)

    # Outermost, as in create_app().
    app.add_middleware(RequestMiddleware, max_body_bytes=1024)

    @app.get("/commit")
    async def commit_fails(session: SessionDep) -> dict[str, str]:
        # The connection dies after the work, so only the dependency's COMMIT meets the outage.
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        with _admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return {"status": "committed?"}

    async def dead_session() -> AsyncIterator[AsyncSession]:
        async with dead.unit_of_work() as session:
            await session.execute(text("SELECT 1"))
            yield session

    @app.get("/dependency")
    async def dependency_fails(_: AsyncSession = Depends(dead_session)) -> dict[str, str]:
        return {}

    @app.get("/bug")
    async def bug(session: SessionDep) -> dict[str, str]:
        await session.execute(text("SELECT * FROM no_such_table"))
        return {}

    return app


def test_outage_is_503_wherever_it_is_raised(pg_factory: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    live_url, dead_url = pg_factory(migrate=False), pg_factory(migrate=False)
    _set_reachable(dead_url, False)
    try:
        with _serve(_wiring_app(live_url, dead_url)) as base:
            for path in ("/commit", "/dependency", "/middleware"):
                caplog.clear()
                # A connection each: uvicorn closes one whose request raised through to it.
                r = httpx.get(base + path, timeout=20)
                _assert_unavailable(r)
                ours = [(rec.levelname, rec.exc_info) for rec in caplog.records if rec.name == "ponyserve.errors"]
                # One line, no traceback: an outage is not a bug.
                assert ours == [("WARNING", None)], (path, ours)
                if path != "/middleware":
                    # Answered inside the request middleware: it carries the request id, and nothing
                    # reaches uvicorn's error log. (From middleware, Starlette's outermost error
                    # middleware answers, and always re-raises to the server.)
                    assert r.headers["x-request-id"]
                    assert not [rec for rec in caplog.records if rec.exc_info], path
            # A real bug is still a 500, logged with its traceback.
            caplog.clear()
            r = httpx.get(base + "/bug", timeout=20)
            assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
            assert any(rec.exc_info for rec in caplog.records if rec.name == "ponyserve.errors")
    finally:
        _set_reachable(dead_url, True)


# -- the whole service through a real outage -----------------------------------------------------


def _job_routes(client: httpx.Client, cust: Customer, job_id: str) -> list[httpx.Response]:
    return [
        client.get(f"/v1/generations/{job_id}", headers=cust.headers),
        client.post("/v1/generations", headers=cust.headers, json={"prompt": "outage pony", "size": "64x64",
                                                                   "steps": 1}),
        client.get("/v1/usage", headers=cust.headers),
        client.get("/v1/models", headers=cust.headers),
    ]


def _readyz_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    body = r.json()
    assert body["status"] == "not_ready" and body["database"] is False
    assert body["error"]["code"] == "service_unavailable" and body["error"]["param"] is None


def test_service_rides_out_a_database_outage(pg_factory: Callable[..., str], demo_model_dir: Path,
                                             tmp_path: Path) -> None:
    url = pg_factory()
    settings = make_settings(url, tmp_path, demo_model_dir, job_lease_seconds=LEASE_SECONDS)
    admin_key = bootstrap_admin(settings)
    server = start_server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            cust = new_customer(client, admin_key, plan="internal")
            done = client.post("/v1/generations", headers=cust.headers,
                               json={"prompt": "before", "size": "64x64", "steps": 1}).json()["id"]
            _wait_for("first job", lambda: _status(client, cust, done) in TERMINAL, 60)
            # Still generating when the database goes: its delivery meets the outage.
            stranded = client.post("/v1/generations", headers=cust.headers,
                                   json={"prompt": "stranded", "size": "256x256", "steps": 60}).json()["id"]
            _wait_for("stranded job starts", lambda: _status(client, cust, stranded) == "running", 30)

            with _outage(url):
                ends = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < ends:
                    for r in _job_routes(client, cust, done):
                        _assert_unavailable(r)
                    started = time.monotonic()
                    _readyz_unavailable(client.get("/readyz"))
                    assert time.monotonic() - started < 3, "/readyz must not hang on a dead database"
                    time.sleep(0.5)

            _wait_for("API answers again", lambda: client.get("/v1/usage", headers=cust.headers).status_code == 200,
                      RECOVERY_SECONDS)
            _wait_for("ready again", lambda: client.get("/readyz").status_code == 200, RECOVERY_SECONDS)
            # The embedded worker recovers by itself: a new job is generated.
            fresh = client.post("/v1/generations", headers=cust.headers,
                                json={"prompt": "after", "size": "64x64", "steps": 1})
            assert fresh.status_code == 202, fresh.text
            _wait_for("new job after recovery", lambda: _status(client, cust, fresh.json()["id"]) in TERMINAL, 20)
            assert _status(client, cust, fresh.json()["id"]) == "succeeded"
            # The job caught by the outage is not left running or queued: leases plus the sweep end it.
            _wait_for("stranded job ends", lambda: _status(client, cust, stranded) in TERMINAL, 20)
            usage = client.get("/v1/usage", headers=cust.headers).json()["account"]["day"]
            assert usage["reserved"] == 0, usage
    finally:
        server.stop()
