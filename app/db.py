"""Engines, the declarative base and the unit of work.

The API and the worker both use SQLAlchemy's asyncio layer (psycopg 3 on Postgres,
aiosqlite for the embedded default), so one set of repositories serves both.
Only ``unit_of_work`` (and the request dependency built on it) commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TypeDecorator, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations are identical on Postgres and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way in and out; SQLite would otherwise hand back naive values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sync_url(url: str) -> str:
    """The URL Alembic (synchronous) uses for the same database."""
    return url.replace("sqlite+aiosqlite", "sqlite", 1)


def async_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return url.replace("sqlite:", "sqlite+aiosqlite:", 1)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the embedded worker write while API requests read; busy_timeout makes
    # concurrent writers wait for the lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
    # The driver's legacy transaction control BEGINs only before DML, so a SELECT ahead of a
    # transaction's first write ran outside it. SQLAlchemy's documented recipe takes over instead:
    # no driver BEGIN at all, ours in ``_sqlite_begin``, so SELECTs, DDL and SAVEPOINTs belong to
    # the transaction they appear in.
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock when the transaction starts (waiting up to busy_timeout), so
    # what it reads cannot change before it commits: a check-then-write such as "fewer than
    # max_queued_jobs queued, so insert one" holds on SQLite as the key-row lock makes it hold on
    # Postgres, and the rate limiter's lock wait happens before its statement reads the clock.
    # Under DEFERRED, that read's transaction fails its first write with SQLITE_BUSY whenever another
    # one committed in between, and busy_timeout does not retry it. The price: transactions, reads
    # included, run one at a time; ours are short.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # hide_parameters: an error's text never carries row contents into a log line.
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                               hide_parameters=True)


class Database:
    """One engine and its session factory, created at start-up and shared by API and worker."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A transaction: committed when the block ends normally, rolled back on any exception."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()


async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    """Per-request transaction, committed before the response leaves (``scope="function"``):
    a client that saw 201 must find the row on its very next request."""
    db: Database = request.app.state.db
    async with db.unit_of_work() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(session_dependency, scope="function")]


def dialect_insert(session: AsyncSession) -> Any:
    """The dialect's INSERT, which (unlike the generic one) has ON CONFLICT clauses."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
