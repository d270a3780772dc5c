"""The login throttle: what API.md and NIST SP 800-63B §5.2.2 ask, in the database or Redis.

Three sliding windows, each counting *failed* logins (an unknown user counts like a wrong
password, so the throttle says nothing about which usernames exist):

- **pair**: ``AUTHSVC_LOGIN_MAX_ATTEMPTS`` failures for one username from one client
  address within ``AUTHSVC_LOGIN_WINDOW_SECONDS`` (online guessing of one account);
- **address**: ``AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS`` failures from one client address
  across all usernames in the same window (credential stuffing);
- **account**: ``login_account_max_failures`` (100) *consecutive* failures for one username
  from all addresses together (a distributed attack on one account). A successful login
  ends the run and resets this counter, and only this one; without a success, failures
  stop counting ``login_account_window_seconds`` (24 h) after they happened.

When a window is full the attempt is refused with ``TooManyAttempts`` (429, ``Retry-After``
= seconds until enough failures have aged out), even with the right password. ``check``
runs *before* the password is hashed, so a refused attempt costs no argon2 and is not
itself recorded; ``record_failure`` runs after a failed verification. Attempts that pass
``check`` concurrently, before any of them is recorded, are all let through, so a burst
can record a few failures more than the limit; every attempt after that is refused.

The state must be shared by every worker and instance: the ``login_failures`` table by
default (``DatabaseThrottle``), Redis when ``AUTHSVC_REDIS_URL`` is set (``RedisThrottle``,
moving windows from the ``limits`` library).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import ServiceUnavailable, TooManyAttempts
from authsvc.models import LoginFailure

# Stands in for a missing client address (an ASGI server that reports no peer).
UNKNOWN_ADDRESS = "unknown"
# The database prunes expired failures on one insert in this many (cheap, and no cron).
PRUNE_EVERY = 64


class LoginThrottle(Protocol):
    """Where failed logins are counted; every worker and instance must see the same state."""

    async def check(self, username: str, address: str | None, now: datetime) -> None:
        """Raise ``TooManyAttempts`` when any window of this attempt is full."""

    async def record_failure(self, username: str, address: str | None, now: datetime) -> None:
        """Count a failed login (wrong password or unknown user)."""

    async def record_success(self, username: str, address: str | None, now: datetime) -> None:
        """A correct password: end the account's run of consecutive failures."""


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """The three windows, from ``Settings``."""

    max_attempts: int
    window_seconds: int
    max_attempts_per_address: int
    account_max_failures: int
    account_window_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottleLimits:
        return cls(
            max_attempts=settings.login_max_attempts,
            window_seconds=settings.login_window_seconds,
            max_attempts_per_address=settings.login_max_attempts_per_address,
            account_max_failures=settings.login_account_max_failures,
            account_window_seconds=settings.login_account_window_seconds,
        )

    @property
    def retention_seconds(self) -> int:
        """How long a failure can still count in some window."""
        return max(self.window_seconds, self.account_window_seconds)


def _refuse(waits: list[float]) -> None:
    if waits:
        # Every full window must have room again before an attempt can pass.
        raise TooManyAttempts(math.ceil(max(waits)))


class DatabaseThrottle:
    """Failures as rows of ``login_failures``, counted with indexed range queries.

    Runs on the caller's session. ``check`` only reads; ``record_failure`` commits its row
    at once (the login it belongs to has nothing else to commit); ``record_success`` joins
    the caller's transaction, which the login commits with its new session.
    """

    def __init__(self, db: AsyncSession, limits: ThrottleLimits) -> None:
        self._db = db
        self._limits = limits

    def _windows(
        self, username: str, address: str
    ) -> list[tuple[list[ColumnElement[bool]], int, int]]:
        lim = self._limits
        return [
            (
                [LoginFailure.username == username, LoginFailure.ip_address == address],
                lim.max_attempts,
                lim.window_seconds,
            ),
            (
                [LoginFailure.ip_address == address],
                lim.max_attempts_per_address,
                lim.window_seconds,
            ),
            (
                [LoginFailure.username == username, LoginFailure.counts_for_account.is_(True)],
                lim.account_max_failures,
                lim.account_window_seconds,
            ),
        ]

    async def check(self, username: str, address: str | None, now: datetime) -> None:
        waits: list[float] = []
        for conditions, limit, window in self._windows(username, address or UNKNOWN_ADDRESS):
            start = now - timedelta(seconds=window)
            # The limit-th most recent failure in the window exists only when the window is
            # full, and the window has room again once that one ages out.
            blocking = await self._db.scalar(
                select(LoginFailure.attempted_at)
                .where(*conditions, LoginFailure.attempted_at > start)
                .order_by(LoginFailure.attempted_at.desc())
                .offset(limit - 1)
                .limit(1)
            )
            if blocking is not None:
                waits.append((blocking - start).total_seconds())
        _refuse(waits)

    async def record_failure(self, username: str, address: str | None, now: datetime) -> None:
        row = LoginFailure(
            username=username, ip_address=address or UNKNOWN_ADDRESS, attempted_at=now
        )
        self._db.add(row)
        await self._db.flush()
        if row.id % PRUNE_EVERY == 0:
            cutoff = now - timedelta(seconds=self._limits.retention_seconds)
            await self._db.execute(delete(LoginFailure).where(LoginFailure.attempted_at <= cutoff))
        await self._db.commit()

    async def record_success(self, username: str, address: str | None, now: datetime) -> None:
        await self._db.execute(
            update(LoginFailure)
            .where(LoginFailure.username == username, LoginFailure.counts_for_account.is_(True))
            .values(counts_for_account=False)
        )


def redis_storage_uri(url: str) -> str:
    """``limits``' scheme for its asyncio Redis storage (``redis://`` -> ``async+redis://``)."""
    return url if url.startswith("async+") else f"async+{url}"


class RedisThrottle:
    """The same three windows as moving windows in Redis (``limits``, via ``coredis``).

    One instance is shared by all requests of a process. Redis errors are reported as
    ``ServiceUnavailable`` (503): the throttle fails closed rather than let guesses through.
    """

    def __init__(self, url: str, limits: ThrottleLimits, *, key_prefix: str = "authsvc") -> None:
        self._storage = RedisStorage(
            redis_storage_uri(url), wrap_exceptions=True, key_prefix=key_prefix
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._pair = RateLimitItemPerSecond(
            limits.max_attempts, limits.window_seconds, namespace="login-pair"
        )
        self._address = RateLimitItemPerSecond(
            limits.max_attempts_per_address, limits.window_seconds, namespace="login-address"
        )
        self._account = RateLimitItemPerSecond(
            limits.account_max_failures, limits.account_window_seconds, namespace="login-account"
        )

    def _windows(self, username: str, address: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        return [
            (self._pair, (username, address)),
            (self._address, (address,)),
            (self._account, (username,)),
        ]

    async def check(self, username: str, address: str | None, now: datetime) -> None:
        waits: list[float] = []
        try:
            for item, ids in self._windows(username, address or UNKNOWN_ADDRESS):
                if not await self._limiter.test(item, *ids):
                    stats = await self._limiter.get_window_stats(item, *ids)
                    waits.append(stats.reset_time - time.time())
        except StorageError:
            raise ServiceUnavailable() from None
        _refuse(waits)

    async def record_failure(self, username: str, address: str | None, now: datetime) -> None:
        try:
            for item, ids in self._windows(username, address or UNKNOWN_ADDRESS):
                await self._limiter.hit(item, *ids)
        except StorageError:
            raise ServiceUnavailable() from None

    async def record_success(self, username: str, address: str | None, now: datetime) -> None:
        try:
            await self._limiter.clear(self._account, username)
        except StorageError:
            raise ServiceUnavailable() from None


def build_shared_throttle(settings: Settings) -> LoginThrottle | None:
    """The process-wide throttle when Redis is configured; ``None`` means the database's."""
    if settings.redis_url is None:
        return None
    return RedisThrottle(
        settings.redis_url,
        ThrottleLimits.from_settings(settings),
        key_prefix=settings.redis_key_prefix,
    )
