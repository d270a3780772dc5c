"""The database throttle on its own: exact windows and Retry-After, pruning, account reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.db import make_sessionmaker
from authsvc.errors import TooManyAttempts
from authsvc.models import LoginFailure
from authsvc.services.throttle import PRUNE_EVERY, DatabaseThrottle, ThrottleLimits

LIMITS = ThrottleLimits(
    max_attempts=5,
    window_seconds=300,
    max_attempts_per_address=8,
    account_max_failures=10,
    account_window_seconds=3600,
)
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def test_retry_after_is_when_the_oldest_counted_failure_ages_out(
    clean_db: AsyncEngine,
) -> None:
    async with make_sessionmaker(clean_db)() as db:
        throttle = DatabaseThrottle(db, LIMITS)
        for i in range(5):
            await throttle.check("eve", "192.0.2.1", T0 + timedelta(seconds=i))
            await throttle.record_failure("eve", "192.0.2.1", T0 + timedelta(seconds=i))
        with pytest.raises(TooManyAttempts) as info:
            await throttle.check("eve", "192.0.2.1", T0 + timedelta(seconds=10))
        assert info.value.retry_after == 290
        # One second after the first failure left the window, there is room again.
        await throttle.check("eve", "192.0.2.1", T0 + timedelta(seconds=301))
        await throttle.check("eve", "192.0.2.2", T0 + timedelta(seconds=10))
        await db.rollback()


async def test_address_window_and_account_cap(clean_db: AsyncEngine) -> None:
    async with make_sessionmaker(clean_db)() as db:
        throttle = DatabaseThrottle(db, LIMITS)
        for i in range(8):
            await throttle.record_failure(f"user{i}", "192.0.2.9", T0)
        with pytest.raises(TooManyAttempts):
            await throttle.check("fresh", "192.0.2.9", T0 + timedelta(seconds=1))
        # Ten failures from ten addresses fill the account cap; a success resets it.
        for i in range(10):
            await throttle.record_failure("target", f"198.51.100.{i}", T0)
        with pytest.raises(TooManyAttempts) as info:
            await throttle.check("target", "203.0.113.50", T0 + timedelta(seconds=60))
        assert info.value.retry_after == 3600 - 60
        await throttle.record_success("target", "203.0.113.50", T0)
        await db.commit()
        await throttle.check("target", "203.0.113.50", T0 + timedelta(seconds=60))
        await db.rollback()


async def test_expired_failures_are_pruned(clean_db: AsyncEngine) -> None:
    async with make_sessionmaker(clean_db)() as db:
        throttle = DatabaseThrottle(db, LIMITS)
        for i in range(PRUNE_EVERY * 2):
            await throttle.record_failure(f"old{i}", "192.0.2.77", T0)
        later = T0 + timedelta(seconds=LIMITS.retention_seconds + 1)
        for i in range(PRUNE_EVERY):
            await throttle.record_failure(f"new{i}", "192.0.2.78", later)
        old = await db.scalar(
            select(func.count()).select_from(LoginFailure).where(LoginFailure.attempted_at == T0)
        )
        assert old == 0
        await db.rollback()
