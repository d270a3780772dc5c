"""The throttle stores on their own (database and Redis): exact windows and Retry-After,
counting before checking under concurrency, giving counts back (expired attempts go with
``authsvc purge``: tests/e2e/test_admin_cli.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.db import make_sessionmaker
from authsvc.errors import TooManyAttempts
from authsvc.models import LoginFailure, RegistrationAttempt
from authsvc.services.throttle import (
    DatabaseThrottle,
    LoginTicket,
    RedisThrottle,
    Throttle,
    ThrottleLimits,
    address_key,
)
from tests.redis_support import REDIS_URL, require_redis

LIMITS = ThrottleLimits(
    max_attempts=5,
    window_seconds=300,
    max_attempts_per_address=8,
    account_max_failures=10,
    account_window_seconds=3600,
    register_max_per_address=4,
    register_window_seconds=600,
)
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
StoreFactory = Callable[[], AbstractAsyncContextManager[Throttle]]


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest, clean_db: AsyncEngine) -> StoreFactory:
    """Opens a throttle of either store: a database one on its own session (several may
    be open at once, like concurrent requests), or one Redis throttle under a fresh prefix."""
    if request.param == "redis":
        require_redis()
        shared = RedisThrottle(REDIS_URL, LIMITS, key_prefix=f"authsvc-test-{uuid.uuid4().hex}")

        @asynccontextmanager
        async def redis() -> AsyncIterator[Throttle]:
            yield shared

        return redis

    @asynccontextmanager
    async def database() -> AsyncIterator[Throttle]:
        async with make_sessionmaker(clean_db)() as db:
            yield DatabaseThrottle(db, LIMITS)
            await db.commit()

    return database


def now() -> datetime:
    return datetime.now(UTC)


async def admit(store: StoreFactory, username: str, address: str, **kw: bool) -> LoginTicket:
    async with store() as throttle:
        return await throttle.admit_login(
            username, address, now(), check_account=kw.get("check_account", True)
        )


async def room(store: StoreFactory, username: str, address: str, limit: int) -> int:
    """Attempts admitted one at a time (and left counted) until the first refusal."""
    for admitted in range(limit + 1):
        try:
            await admit(store, username, address)
        except TooManyAttempts:
            return admitted
    raise AssertionError(f"more than {limit} admitted")


async def test_simultaneous_attempts_get_at_most_the_limit(store: StoreFactory) -> None:
    results = await asyncio.gather(
        *(admit(store, "eve", "192.0.2.1") for _ in range(30)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, LoginTicket)]
    assert all(isinstance(r, LoginTicket | TooManyAttempts) for r in results), results
    assert len(admitted) <= LIMITS.max_attempts
    # The refused ones were not counted: the window holds exactly the limit.
    assert len(admitted) + await room(store, "eve", "192.0.2.1", 5) == LIMITS.max_attempts


async def test_simultaneous_attempts_from_many_addresses_meet_the_account_cap(
    store: StoreFactory,
) -> None:
    results = await asyncio.gather(
        *(admit(store, "target", f"198.51.100.{i}") for i in range(30)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, LoginTicket)]
    assert len(admitted) <= LIMITS.account_max_failures
    left = await room(store, "target", "203.0.113.1", LIMITS.account_max_failures)
    assert len(admitted) + left == LIMITS.account_max_failures


async def test_giving_back_frees_the_count_and_success_ends_the_account_run(
    store: StoreFactory,
) -> None:
    tickets = [await admit(store, "bob", "192.0.2.5") for _ in range(5)]
    with pytest.raises(TooManyAttempts):
        await admit(store, "bob", "192.0.2.5")
    async with store() as throttle:
        await throttle.give_back_login(tickets[0], succeeded=False)
    await admit(store, "bob", "192.0.2.5")  # the count given back is room for one
    with pytest.raises(TooManyAttempts):
        await admit(store, "bob", "192.0.2.5")

    # Ten failures from ten addresses fill the account cap ...
    for i in range(10):
        await admit(store, "carol", f"198.51.100.{i}")
    with pytest.raises(TooManyAttempts):
        await admit(store, "carol", "203.0.113.9")
    # ... except where the account is not checked (a known address),
    ticket = await admit(store, "carol", "203.0.113.9", check_account=False)
    # and a success ends the run for every address.
    async with store() as throttle:
        await throttle.give_back_login(ticket, succeeded=True)
    await admit(store, "carol", "203.0.113.10")


async def test_per_address_window_spans_usernames(store: StoreFactory) -> None:
    for i in range(8):
        await admit(store, f"user{i}", "192.0.2.9")
    with pytest.raises(TooManyAttempts) as info:
        await admit(store, "fresh", "192.0.2.9")
    assert 1 <= info.value.retry_after <= 300
    await admit(store, "fresh", "192.0.2.10")


async def test_registration_attempts_per_address(store: StoreFactory) -> None:
    async def attempt(address: str) -> None:
        async with store() as throttle:
            await throttle.admit_registration(address, now())

    outcomes = await asyncio.gather(
        *(attempt("192.0.2.20") for _ in range(12)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) <= 4
    refused = [o for o in outcomes if isinstance(o, TooManyAttempts)]
    assert len(refused) >= 8
    assert all(1 <= r.retry_after <= 600 for r in refused)
    assert "registration" in refused[0].detail
    await attempt("192.0.2.21")


async def test_retry_after_is_when_the_blocking_attempt_ages_out(clean_db: AsyncEngine) -> None:
    async with make_sessionmaker(clean_db)() as db:
        throttle = DatabaseThrottle(db, LIMITS)
        for i in range(5):
            await throttle.admit_login(
                "eve", "192.0.2.1", T0 + timedelta(seconds=i), check_account=True
            )
        with pytest.raises(TooManyAttempts) as info:
            await throttle.admit_login(
                "eve", "192.0.2.1", T0 + timedelta(seconds=10), check_account=True
            )
        assert info.value.retry_after == 290
        # The refused attempt left no row behind: one second after the first attempt left
        # the window, there is room again.
        assert await db.scalar(select(func.count()).select_from(LoginFailure)) == 5
        await throttle.admit_login(
            "eve", "192.0.2.1", T0 + timedelta(seconds=301), check_account=True
        )
        await throttle.admit_login(
            "eve", "192.0.2.2", T0 + timedelta(seconds=10), check_account=True
        )

        for i in range(4):
            await throttle.admit_registration("192.0.2.3", T0 + timedelta(seconds=i))
        with pytest.raises(TooManyAttempts) as info:
            await throttle.admit_registration("192.0.2.3", T0 + timedelta(seconds=100))
        assert info.value.retry_after == 500
        assert await db.scalar(select(func.count()).select_from(RegistrationAttempt)) == 4
        await db.rollback()


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_address_key_counts_ipv6_by_its_64_prefix(address: str | None, key: str) -> None:
    assert address_key(address) == key
