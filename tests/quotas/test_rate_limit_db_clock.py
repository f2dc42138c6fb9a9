"""The rate limiter's service functions on Postgres and SQLite: time is the database's, read once the
key's rate row is in hand (a lock wait cannot make a request look early), a refund gives back exactly
one token and never more than a full bucket, and a client keeping to the advertised policy passes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.db import Database
from app.errors import RateLimited
from app.migrate import upgrade_head
from app.quotas import service as quotas
from app.quotas.limits import Limits, effective_limits
from app.quotas.service import RateDecision

Take = Callable[[], Awaitable[RateDecision | None]]


@pytest.fixture(params=["postgres", "sqlite"])
async def db(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "postgres":
        url = pg_url
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'ponyserve.db'}"
        await asyncio.to_thread(upgrade_head, url)
    database = Database(url, pool_size=50)
    yield database
    await database.dispose()


async def _key(db: Database, **limits: int) -> tuple[ApiKey, Limits]:
    code = f"gcra-{secrets.token_hex(4)}"
    async with db.unit_of_work() as s:
        await accounts.create_plan(s, {"code": code, "name": code, "max_width": 1024, "max_height": 1024,
                                       "max_steps": 50, "max_n": 4, "priority": 0, **limits})
        account = await accounts.create_account(s, name=code, plan_code=code)
        key, _ = await accounts.create_key(s, account_id=account.id)
    return key, effective_limits(account, key)


def _taker(db: Database, key: ApiKey, limits: Limits) -> Take:
    async def take() -> RateDecision | None:
        async with db.unit_of_work() as s:
            return await quotas.take_rate_token(s, key, limits)
    return take


async def _refund(db: Database, key: ApiKey, limits: Limits) -> None:
    async with db.unit_of_work() as s:
        await quotas.refund_rate_token(s, key, limits)


async def _allowed(take: Take, count: int) -> int:
    results = await asyncio.gather(*[take() for _ in range(count)], return_exceptions=True)
    for r in results:
        assert r is None or isinstance(r, RateDecision | RateLimited), r
    return sum(1 for r in results if not isinstance(r, RateLimited))


def _now_sql(db: Database) -> str:
    """The database's time in epoch seconds, as the rate limiter reads it."""
    return ("extract(epoch FROM clock_timestamp())::float8" if db.is_postgres
            else "((julianday('now') - 2440587.5) * 86400.0)")


async def _tat_and_now(db: Database, key: ApiKey) -> tuple[float, float]:
    async with db.unit_of_work() as s:
        row = (await s.execute(text(f"SELECT tat, {_now_sql(db)} FROM rate_limit_state WHERE api_key_id = :k"),
                               {"k": key.id})).one()
    return float(row[0]), float(row[1])


async def test_decisions_and_headers_follow_the_bucket(db: Database) -> None:
    key, limits = await _key(db, requests_per_minute=60, burst=10)
    take = _taker(db, key, limits)
    first = await take()
    assert first is not None
    assert first.headers() == {"RateLimit-Policy": '"requests";q=10;w=10', "RateLimit": '"requests";r=9;t=1'}
    for _ in range(8):
        await take()
    last = await take()
    assert last is not None and (last.remaining, last.reset_seconds) == (0, 10)
    with pytest.raises(RateLimited) as refused:
        await take()
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.headers["RateLimit"] == '"requests";r=0;t=10'


async def test_many_concurrent_requests_within_a_large_limit_all_pass(db: Database) -> None:
    key, limits = await _key(db, requests_per_minute=100_000, burst=1_000)
    assert await _allowed(_taker(db, key, limits), 48) == 48


async def test_a_tight_limit_admits_exactly_its_burst_of_concurrent_requests(db: Database) -> None:
    key, limits = await _key(db, requests_per_minute=1, burst=5)
    assert await _allowed(_taker(db, key, limits), 20) == 5


async def _waiting_for_locks(db: Database, count: int) -> None:
    """Until ``count`` sessions wait for a lock (Postgres) or a moment has passed (SQLite waits in C)."""
    if not db.is_postgres:
        await asyncio.sleep(0.5)
        return
    for _ in range(200):
        async with db.unit_of_work() as s:
            waiting = (await s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                            " AND wait_event_type = 'Lock'"))).scalar_one()
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {waiting} of {count} requests queued for the rate row")


async def test_a_lock_wait_does_not_make_requests_look_early(db: Database) -> None:
    # The tolerance (burst - 1 intervals) is 0.6 s. Requests wait 1 s for the key's rate row, whose
    # holder then spends a token at its own present. Timed when they arrived, every waiter would look
    # a second early and be refused; timed when they get the row, they are one interval late at most.
    key, limits = await _key(db, requests_per_minute=100_000, burst=1_000)
    take = _taker(db, key, limits)
    await take()
    async with db.unit_of_work() as holder:
        lock = ("SELECT tat FROM rate_limit_state WHERE api_key_id = :k FOR UPDATE" if db.is_postgres
                else "UPDATE rate_limit_state SET tat = tat WHERE api_key_id = :k")
        await holder.execute(text(lock), {"k": key.id})
        waiters = asyncio.gather(*[take() for _ in range(48)], return_exceptions=True)
        await _waiting_for_locks(db, 48)
        await asyncio.sleep(1.0)
        # The holder spends a token at its present, as a request that just got the row would.
        await holder.execute(text(f"UPDATE rate_limit_state SET tat = {_now_sql(db)} + :i WHERE api_key_id = :k"),
                             {"i": 60.0 / 100_000, "k": key.id})
    results = await waiters
    assert not [r for r in results if isinstance(r, BaseException)], results


async def test_a_refund_gives_back_one_token(db: Database) -> None:
    key, limits = await _key(db, requests_per_minute=1, burst=2)
    take = _taker(db, key, limits)
    await take()
    await take()
    with pytest.raises(RateLimited):
        await take()
    await _refund(db, key, limits)
    decision = await take()
    assert decision is not None and decision.remaining == 0
    with pytest.raises(RateLimited):
        await take()


async def test_a_refund_never_fills_the_bucket_beyond_its_burst(db: Database) -> None:
    key, limits = await _key(db, requests_per_minute=1, burst=2)
    take = _taker(db, key, limits)
    await take()
    for _ in range(3):
        await _refund(db, key, limits)
    tat, now = await _tat_and_now(db, key)
    # Clamped at the database's now (a full bucket), not three intervals before it.
    assert now - 1.0 <= tat <= now
    assert await _allowed(take, 5) == 2


async def test_a_refund_without_a_rate_limit_or_a_rate_row_is_a_no_op(db: Database) -> None:
    key, limits = await _key(db)
    await _refund(db, key, limits)
    limited_key, limited = await _key(db, requests_per_minute=1, burst=1)
    await _refund(db, limited_key, limited)
    assert await _allowed(_taker(db, limited_key, limited), 3) == 1


async def test_a_client_keeping_to_the_advertised_policy_is_never_refused(db: Database) -> None:
    # 120 a minute, burst 3: the policy says 3 per ceil(3 * 60 / 120) = 2 seconds.
    key, limits = await _key(db, requests_per_minute=120, burst=3)
    take = _taker(db, key, limits)
    first = await take()
    assert first is not None and first.headers()["RateLimit-Policy"] == '"requests";q=3;w=2'
    loop = asyncio.get_running_loop()
    start = loop.time()
    await take()
    await take()
    for window in range(1, 3):
        await asyncio.sleep(max(0.0, start + 2 * window - loop.time()))
        assert await _allowed(take, 3) == 3
