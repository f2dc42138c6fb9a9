"""The application's error tree and the one place that turns errors into HTTP.

Every error leaves the service as
``{"error": {"type": ..., "code": ..., "message": ..., "param": ...}}`` — the
OpenAI shape, so partner SDKs surface our messages unchanged.
"""

from __future__ import annotations

import logging
import sqlite3
from types import TracebackType
from typing import Any, ClassVar

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ponyserve.errors")


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    code: str
    message: str
    param: str | None = None
    limit: int | None = Field(default=None, description="On quota errors: the limit that was reached")
    resets_at: str | None = Field(default=None, description="On quota errors: when the period resets (UTC)")


class ErrorResponse(BaseModel):
    error: ErrorBody


class AppError(Exception):
    status_code: ClassVar[int] = 400
    type: ClassVar[str] = "invalid_request_error"
    code: str = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}
        # Machine-readable details beside the standard fields (e.g. a quota's limit and reset time).
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "code": self.code, "message": self.message, "param": self.param,
                          **self.extra}}

    @staticmethod
    def unprocessable(message: str, *, code: str, param: str | None = None) -> AppError:
        return MalformedBody(message, code=code, param=param)


class InvalidRequest(AppError):
    status_code = 400


class ContentPolicyViolation(AppError):
    status_code = 400
    code = "content_policy_violation"


class AuthenticationError(AppError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # RFC 9110: a 401 says which scheme to use (clients and proxies act on it).
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="ponyserve"')


class QuotaExceeded(AppError):
    status_code = 402
    type = "quota_error"
    code = "quota_exceeded"


class PermissionDenied(AppError):
    status_code = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class MalformedBody(AppError):
    status_code = 422
    code = "malformed_body"


class RateLimited(AppError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limited"


class ServiceUnavailable(AppError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


# How long a client is told to wait while the database is away: restarts and failovers take
# seconds, and the worker retries on about the same rhythm.
DATABASE_RETRY_AFTER_SECONDS = 2


def database_unavailable() -> ServiceUnavailable:
    """The error every caller gets while the database cannot be reached."""
    return ServiceUnavailable("The database is unreachable; retry shortly.",
                              headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


class GenerationFailed(AppError):
    """A job the worker could not complete; reported on the job, or as 500-free 502 on sync calls."""

    status_code = 502
    type = "server_error"
    code = "generation_failed"


class Timeout(AppError):
    status_code = 504
    type = "server_error"
    code = "generation_timeout"


# Documented on every route that takes a body or a key, so generated clients know the shape.
COMMON_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (bad field, size, sampler, model…)"},
    401: {"model": ErrorResponse, "description": "Missing, malformed or revoked API key"},
    403: {"model": ErrorResponse, "description": "The key lacks the scope, or the account is suspended"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    422: {"model": ErrorResponse, "description": "Body is not valid JSON"},
}


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# What every generation POST (native, OpenAI-compatible, A1111) may answer besides the common errors.
GENERATION_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    402: _documented("Daily or monthly image quota used up"),
    409: _documented("Same Idempotency-Key still being accepted"),
    429: _documented("Rate, concurrency or queue limit; see Retry-After"),
    503: _documented("Queue full or draining; see Retry-After"),
}
# Synchronous generations also wait for the result.
SYNC_GENERATION_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **GENERATION_ERROR_RESPONSES,
    502: _documented("The generation failed"),
    504: _documented("Not finished within the server's wait limit; cancelled and not charged"),
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None, "invalid_request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "Request body is not valid JSON.", None, "malformed_json"
    if kind == "extra_forbidden":
        return f"Unknown field '{param}'.", param, "unknown_field"
    if kind == "missing":
        return f"Missing required field '{param}'.", param, "missing_field"
    if kind == "string_too_long" and param in ("prompt", "negative_prompt"):
        return f"'{param}' is too long: {first.get('msg', '')}.", param, "prompt_too_long"
    msg = first.get("msg", "Invalid value.")
    return (f"Invalid value for '{param}': {msg}." if param else f"{msg}."), param, "invalid_value"


# -- telling an outage from a bug -------------------------------------------------------------

# Postgres SQLSTATEs that mean "the server cannot serve us now", not "our SQL is wrong":
# 08 connection exception, 53 insufficient resources (too many connections, out of memory,
# disk full), 57P01-57P05 shutdown, crash recovery, "cannot connect now", idle-session timeout.
# Deadlocks (40P01), serialization failures (40001) and lock or statement timeouts stay bugs:
# they point at our lock order or queries, and their traceback must reach the log.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
# SQLite has no SQLSTATE; its OperationalError also covers syntax errors and missing tables,
# so only these messages count as "cannot reach the file now".
_SQLITE_UNAVAILABLE_MESSAGES = ("database is locked", "unable to open database file", "disk i/o error")
# Modules whose frames show that an OSError came from talking to the database.
_DRIVER_MODULES = ("psycopg", "psycopg_pool", "sqlalchemy", "aiosqlite")


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be reached or is overloaded right now (refused,
    dropped or terminated connections, a database not accepting connections, pool exhausted) —
    a condition to retry — rather than that the input or our SQL is wrong. Shared by the API's
    error handler and the worker's loop."""
    if isinstance(exc, BaseExceptionGroup):
        return bool(exc.exceptions) and all(is_database_unavailable(e) for e in exc.exceptions)
    if isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)):
        return False
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        # TimeoutError: no pooled connection within pool_timeout, i.e. overloaded rather than broken.
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) and _driver_unavailable(exc.orig)
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return _driver_unavailable(exc)
    if isinstance(exc, OSError):
        return _raised_in(exc.__traceback__, _DRIVER_MODULES)
    return False


def _driver_unavailable(orig: BaseException | None) -> bool:
    """Whether the DBAPI error under an SQLAlchemy OperationalError/InterfaceError is an outage."""
    if isinstance(orig, psycopg.Error):
        # No SQLSTATE: the failure happened client-side (refused, reset, server closed the connection).
        return orig.sqlstate is None or orig.sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    if isinstance(orig, sqlite3.Error):
        return str(orig).lower().startswith(_SQLITE_UNAVAILABLE_MESSAGES)
    return isinstance(orig, OSError)


def _raised_in(tb: TracebackType | None, modules: tuple[str, ...]) -> bool:
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.split(".", 1)[0] in modules:
            return True
        tb = tb.tb_next
    return False


def _brief(exc: BaseException) -> str:
    """The first line of a database error: an outage is one log line, not a page of traceback."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _database_unavailable_response(request: Request, exc: BaseException) -> JSONResponse:
    # An outage is not a bug: one line without a traceback, and the caller is told when to retry.
    log.warning("database unavailable: %s", _brief(exc),
                extra={"method": request.method, "path": request.url.path, "error": type(exc).__name__})
    err = database_unavailable()
    return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, code = _validation_message(exc)
        err: AppError
        if code == "malformed_json":
            err = MalformedBody(message, code=code)
        else:
            err = InvalidRequest(message, code=code, param=param)
        return JSONResponse(err.body(), status_code=err.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}
        type_, code = codes.get(exc.status_code, ("invalid_request_error", "http_error"))
        body = {"error": {"type": type_, "code": code, "message": str(exc.detail), "param": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    # Registered per class so they run in Starlette's ExceptionMiddleware, inside our request
    # middleware: the request log and latency metric then see the 503, and the exception is
    # consumed instead of reaching uvicorn's traceback log. Errors of these classes that are
    # not an outage (an IntegrityError, a disk error of the image store) are re-raised to
    # the catch-all below, which logs them as the bugs they are.
    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if is_database_unavailable(exc):
            return _database_unavailable_response(request, exc)
        raise exc

    for outage_class in (sa_exc.SQLAlchemyError, psycopg.Error, OSError):
        app.add_exception_handler(outage_class, _database_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only reached by errors raised outside the error boundary (app.observability.security),
        # i.e. in the outer middleware; the boundary renders everything else the same way.
        return unexpected_error_response(request, exc)


def unexpected_error_response(request: Request, exc: Exception) -> JSONResponse:
    """The 500 for a bug (an outage is still a 503), logged once with its traceback."""
    if is_database_unavailable(exc):
        return _database_unavailable_response(request, exc)
    log.error("unhandled error", exc_info=exc,
              extra={"method": request.method, "path": request.url.path, "error": type(exc).__name__})
    body = {"error": {"type": "server_error", "code": "internal_error",
                      "message": "Internal error; it has been logged.", "param": None}}
    return JSONResponse(body, status_code=500)
