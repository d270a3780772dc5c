"""The login and registration limits, counted in the database or in Redis.

Login has three sliding windows (an unknown user counts like a wrong password, so the
limits say nothing about which usernames exist):

- **pair**: ``AUTHSVC_LOGIN_MAX_ATTEMPTS`` for one username from one client address within
  ``AUTHSVC_LOGIN_WINDOW_SECONDS`` (online guessing of one account);
- **address**: ``AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS`` from one client address across all
  usernames in the same window (credential stuffing);
- **account**: ``AUTHSVC_LOGIN_ACCOUNT_MAX_FAILURES`` for one username from all addresses
  together within ``AUTHSVC_LOGIN_ACCOUNT_WINDOW_SECONDS`` (NIST SP 800-63B §5.2.2). A
  successful login ends the run: earlier attempts stop counting here (only here). The login
  skips this window from an address the account logged in from before (a *known address*),
  so nobody else's failures lock the owner out of it.

Registration has one: ``AUTHSVC_REGISTER_MAX_PER_ADDRESS`` attempts per client address within
``AUTHSVC_REGISTER_WINDOW_SECONDS``, whatever their outcome.

**Count first, then check.** An attempt is counted in every window *before* its password is
checked, and the count it then reads includes itself: the database commits the attempt's
row, then counts the window's rows in a new statement; Redis adds and counts in one script.
An attempt that finds a window over its limit is refused with ``TooManyAttempts`` (429,
``Retry-After`` = seconds until that window has room) and its count is removed, so being
refused never extends a lockout. An attempt whose password turns out right (or was never
checked: a full hashing queue, a disabled account) gives its count back; a failure keeps it.

Why N simultaneous attempts get at most *limit* password checks: take the admitted attempts
whose rows are still there (in flight, or failed) and, of those, the one whose count ran
last. Every other one had committed its row before its own count ran, so before this one's:
this count saw all of them and itself, and it was admitted, so there are at most *limit*.
This holds under PostgreSQL's READ COMMITTED (each statement sees every transaction
committed before it started) and on SQLite (one writer at a time; a read transaction sees
every commit before its first read), across workers and instances that share the database.
Redis runs each script alone.

Before counting, the database store checks whether a window is full already
(``check_login``, in the login's first read): an attack that goes on is then refused at the
cost of one read, with nothing written. Attempts in flight count too, so a burst may be
refused more than the limit requires while it lasts, never less.

An IPv6 client counts by its /64 prefix (``address_key``): one host usually has a whole /64.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import ServiceUnavailable, TooManyAttempts
from authsvc.repositories.throttle import LoginWindow, ThrottleRepository
from authsvc.services.uow import UnitOfWork

if TYPE_CHECKING:
    import coredis

# Stands in for a missing client address (an ASGI server that reports no peer).
UNKNOWN_ADDRESS = "unknown"
REGISTRATION_REFUSED = "Too many registration attempts from this address; try again later."


def address_key(address: str | None) -> str:
    """What the limits count a client address as: an IPv4 address, or an IPv6 /64 prefix.

    An IPv4-mapped IPv6 address is the IPv4 address it maps. Anything that is not an IP
    address (a test client's name) is kept as it is.
    """
    if address is None:
        return UNKNOWN_ADDRESS
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """The windows, from ``Settings``."""

    max_attempts: int
    window_seconds: int
    max_attempts_per_address: int
    account_max_failures: int
    account_window_seconds: int
    register_max_per_address: int = 20
    register_window_seconds: int = 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottleLimits:
        return cls(
            max_attempts=settings.throttle.login_max_attempts,
            window_seconds=settings.throttle.login_window_seconds,
            max_attempts_per_address=settings.throttle.login_max_attempts_per_address,
            account_max_failures=settings.throttle.login_account_max_failures,
            account_window_seconds=settings.throttle.login_account_window_seconds,
            register_max_per_address=settings.throttle.register_max_per_address,
            register_window_seconds=settings.throttle.register_window_seconds,
        )

    @property
    def retention_seconds(self) -> int:
        """How long a login attempt can still count in some window."""
        return max(self.window_seconds, self.account_window_seconds)

    def login_windows(self, *, check_account: bool) -> list[tuple[LoginWindow, int, int]]:
        """``(window, limit, seconds)`` of each login window an attempt is checked against."""
        windows = [
            (LoginWindow.PAIR, self.max_attempts, self.window_seconds),
            (LoginWindow.ADDRESS, self.max_attempts_per_address, self.window_seconds),
        ]
        if check_account:
            windows.append(
                (LoginWindow.ACCOUNT, self.account_max_failures, self.account_window_seconds)
            )
        return windows


@dataclass(frozen=True, slots=True)
class LoginTicket:
    """An admitted login attempt, counted in its windows until it is given back."""

    username: str
    address: str
    # The attempt's row id (database) or its member in the sorted sets (Redis).
    ref: int | str


class Throttle(Protocol):
    """Where attempts are counted; every worker and instance must see the same state."""

    async def check_login(
        self, username: str, address: str, now: datetime, *, check_account: bool
    ) -> None:
        """Raise ``TooManyAttempts`` if a window is full already, counting nothing: a cheap
        early refusal for an attack that goes on (``admit_login`` decides). On the database
        this joins the caller's unit of work."""

    async def admit_login(
        self, username: str, address: str, now: datetime, *, check_account: bool
    ) -> LoginTicket:
        """Count a login attempt, then raise ``TooManyAttempts`` (uncounting it again) if a
        window is over its limit. ``address`` is an ``address_key``."""

    async def give_back_login(self, ticket: LoginTicket, *, succeeded: bool) -> None:
        """Uncount an attempt whose password was right or never checked; ``succeeded``
        also ends the account's run. On the database this joins the caller's unit of work."""

    async def admit_registration(self, address: str, now: datetime) -> None:
        """Count a registration attempt; ``TooManyAttempts`` (uncounted) over the limit."""


def _refuse(waits: Sequence[float], detail: str | None = None) -> None:
    if waits:
        # Every full window must have room again before an attempt can pass.
        raise TooManyAttempts(math.ceil(max(waits)), detail)


def _wait(blocker: datetime, start: datetime, seconds: int) -> float:
    # Seconds until ``blocker`` leaves the window that began at ``start``; a concurrent
    # attempt stamped a moment later than this one is still counted as within the window.
    return min((blocker - start).total_seconds(), seconds)


class DatabaseThrottle:
    """Attempts as rows (``login_failures``, ``registration_attempts``), in units of work on
    the caller's session.

    ``admit_*`` commits the attempt's row in a unit of its own, then counts in a new read
    unit; a refused attempt's row is deleted (in a third unit) before the refusal.
    ``check_login`` and ``give_back_login`` join the caller's unit: a login gives its count
    back in the unit that starts its session. Expired rows go with ``authsvc purge``.
    """

    def __init__(self, db: AsyncSession, limits: ThrottleLimits) -> None:
        self._uow = UnitOfWork(db)
        self._limits = limits
        self._rows = ThrottleRepository(db)

    async def _login_waits(
        self, username: str, address: str, now: datetime, check_account: bool, own_id: int | None
    ) -> list[float]:
        windows = [
            (window, now - timedelta(seconds=seconds), limit, seconds)
            for window, limit, seconds in self._limits.login_windows(check_account=check_account)
        ]
        blockers = await self._rows.login_blockers(
            [(window, start, limit) for window, start, limit, _ in windows],
            username=username,
            address=address,
            own_id=own_id,
        )
        return [
            _wait(blocker, start, seconds)
            for (_, start, _, seconds), blocker in zip(windows, blockers, strict=True)
            if blocker is not None
        ]

    # -- a login through the driver (PostgreSQL; ``repositories.login``) ----------------------
    # Its first statement checks the windows and, when none is full, inserts and commits the
    # attempt's row; ``admit_counted_login`` then counts in a statement of its own.

    def login_windows(self, now: datetime) -> list[tuple[LoginWindow, datetime, int]]:
        """All three login windows as ``(window, since, limit)`` (pair, address, account)."""
        return [
            (window, now - timedelta(seconds=seconds), limit)
            for window, limit, seconds in self._limits.login_windows(check_account=True)
        ]

    def refuse_login(self, now: datetime, blockers: Sequence[datetime | None]) -> None:
        """``TooManyAttempts`` if a blocker of ``login_windows(now)`` (``None``: room, or not
        checked) says a window is full."""
        _refuse(
            [
                _wait(blocker, now - timedelta(seconds=seconds), seconds)
                for (_, _, seconds), blocker in zip(
                    self._limits.login_windows(check_account=True), blockers, strict=True
                )
                if blocker is not None
            ]
        )

    async def admit_counted_login(
        self, username: str, address: str, now: datetime, attempt_id: int, *, check_account: bool
    ) -> LoginTicket:
        """``admit_login`` for an attempt whose row is committed already: count (in a new
        statement, so it sees every attempt committed before it), and refuse over a limit
        (the same statement deleting the row again)."""
        blockers = await self._rows.count_login_attempt(
            attempt_id,
            self.login_windows(now),
            username=username,
            address=address,
            check_account=check_account,
        )
        self.refuse_login(now, blockers)
        return LoginTicket(username, address, attempt_id)

    async def check_login(
        self, username: str, address: str, now: datetime, *, check_account: bool
    ) -> None:
        async with self._uow.read():
            waits = await self._login_waits(username, address, now, check_account, None)
        _refuse(waits)

    async def admit_login(
        self, username: str, address: str, now: datetime, *, check_account: bool
    ) -> LoginTicket:
        self._uow.require_no_unit("count before check")
        async with self._uow.write():
            attempt = await self._rows.add_login_attempt(
                username=username, address=address, now=now
            )
        # A new transaction, begun after that commit: it sees every attempt committed
        # before it (see the module docstring for why that bounds the checks).
        async with self._uow.read():
            waits = await self._login_waits(username, address, now, check_account, attempt)
        if waits:
            async with self._uow.write():
                await self._rows.remove_login_attempt(attempt)
            _refuse(waits)
        return LoginTicket(username, address, attempt)

    async def give_back_login(self, ticket: LoginTicket, *, succeeded: bool) -> None:
        assert isinstance(ticket.ref, int)
        async with self._uow.write():
            await self._rows.remove_login_attempt(ticket.ref)
            if succeeded:
                await self._rows.end_account_run(ticket.username)

    async def admit_registration(self, address: str, now: datetime) -> None:
        self._uow.require_no_unit("count before check")
        async with self._uow.write():
            attempt = await self._rows.add_registration_attempt(address=address, now=now)
        start = now - timedelta(seconds=self._limits.register_window_seconds)
        async with self._uow.read():
            blocker = await self._rows.registration_blocker(
                address=address,
                since=start,
                limit=self._limits.register_max_per_address,
                own_id=attempt,
            )
        if blocker is not None:
            async with self._uow.write():
                await self._rows.remove_registration_attempt(attempt)
            _refuse(
                [_wait(blocker, start, self._limits.register_window_seconds)],
                REGISTRATION_REFUSED,
            )


# Count one attempt in each window, then check. Each window is a sorted set of attempts
# scored by time (ms, Redis' clock). KEYS: the windows. ARGV[1]: the attempt's member; then,
# for window i, ARGV[3i-1] its limit, ARGV[3i] its length (ms), ARGV[3i+1] "1" if checked.
# Returns 0 when every checked window holds at most its limit (the attempt stays counted);
# otherwise the attempt is removed from every window again and the result is the number of
# milliseconds until each full window has room for one more.
_ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local counts = {}
local refused = false
for i, key in ipairs(KEYS) do
  local length = tonumber(ARGV[3 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - length)
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, length)
  counts[i] = redis.call('ZCARD', key)
  if ARGV[3 * i + 1] == '1' and counts[i] > tonumber(ARGV[3 * i - 1]) then
    refused = true
  end
end
if not refused then
  return 0
end
local wait = 1
for i, key in ipairs(KEYS) do
  redis.call('ZREM', key, member)
  local limit = tonumber(ARGV[3 * i - 1])
  if ARGV[3 * i + 1] == '1' and counts[i] > limit then
    -- Without this attempt, counts[i] - 1 >= limit remain; the window has room once the
    -- (counts[i] - limit) oldest have aged out.
    local index = counts[i] - 1 - limit
    local oldest = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
    if oldest[2] then
      wait = math.max(wait, tonumber(oldest[2]) + tonumber(ARGV[3 * i]) - now)
    end
  end
end
return wait
"""


def redis_client_url(url: str) -> str:
    """The URL ``coredis`` understands for a configured Redis URL.

    ``redis+unix://`` (a Unix socket) is ``unix://``; ``valkey(s)://`` is ``redis(s)://``.
    """
    url = url.removeprefix("async+")
    for ours, theirs in (
        ("redis+unix://", "unix://"),
        ("valkeys://", "rediss://"),
        ("valkey://", "redis://"),
    ):
        if url.startswith(ours):
            return theirs + url.removeprefix(ours)
    return url


def _digest(value: str) -> str:
    # Keys never hold a typed username as it is (it may be a password typed in the wrong
    # field), and a digest has no separator in it.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RedisThrottle:
    """The same windows as sorted sets in Redis, one script per admission.

    One instance is shared by all requests of a process. Redis errors are reported as
    ``ServiceUnavailable`` (503): the limits fail closed rather than let attempts through.

    coredis is imported here, not at the top: it (with beartype) costs each process about
    28 MiB, which a deployment without Redis should not pay.
    """

    def __init__(
        self,
        url: str,
        limits: ThrottleLimits,
        *,
        key_prefix: str = "authsvc",
        timeout_seconds: float = 2.0,
    ) -> None:
        import coredis  # see the docstring
        import coredis.exceptions

        self._errors = (coredis.exceptions.RedisError, OSError, TimeoutError)
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            redis_client_url(url),
            connect_timeout=timeout_seconds,
            stream_timeout=timeout_seconds,
        )
        self._admit = self._client.register_script(_ADMIT_SCRIPT)
        self._limits = limits
        self._prefix = key_prefix

    def _login_keys(self, username: str, address: str) -> list[str]:
        user = _digest(username)
        return [
            f"{self._prefix}:login-pair:{user}:{address}",
            f"{self._prefix}:login-address:{address}",
            f"{self._prefix}:login-account:{user}",
        ]

    async def _run_admit(
        self, keys: Sequence[str], windows: Sequence[tuple[int, int, bool]], member: str
    ) -> float | None:
        args = [member]
        for limit, seconds, checked in windows:
            args += [str(limit), str(seconds * 1000), "1" if checked else "0"]
        try:
            wait_ms = await self._admit(keys=list(keys), args=tuple(args))
        except self._errors:
            raise ServiceUnavailable() from None
        assert isinstance(wait_ms, int)
        return wait_ms / 1000 if wait_ms > 0 else None

    async def check_login(
        self, username: str, address: str, now: datetime, *, check_account: bool
    ) -> None:
        # Admitting is one atomic round trip already: nothing to save by checking first.
        return None

    async def admit_login(
        self, username: str, address: str, now: datetime, *, check_account: bool
    ) -> LoginTicket:
        lim = self._limits
        member = uuid.uuid4().hex
        wait = await self._run_admit(
            self._login_keys(username, address),
            [
                (lim.max_attempts, lim.window_seconds, True),
                (lim.max_attempts_per_address, lim.window_seconds, True),
                # Counted even where it is not checked: a failure from a known address is
                # still a failure of the account.
                (lim.account_max_failures, lim.account_window_seconds, check_account),
            ],
            member,
        )
        if wait is not None:
            _refuse([wait])
        return LoginTicket(username, address, member)

    async def give_back_login(self, ticket: LoginTicket, *, succeeded: bool) -> None:
        pair, address, account = self._login_keys(ticket.username, ticket.address)
        member = str(ticket.ref)
        try:
            for key in (pair, address) if succeeded else (pair, address, account):
                await self._client.zrem(key, [member])
            if succeeded:
                await self._client.delete([account])
        except self._errors:
            raise ServiceUnavailable() from None

    async def admit_registration(self, address: str, now: datetime) -> None:
        lim = self._limits
        wait = await self._run_admit(
            [f"{self._prefix}:register-address:{address}"],
            [(lim.register_max_per_address, lim.register_window_seconds, True)],
            uuid.uuid4().hex,
        )
        if wait is not None:
            _refuse([wait], REGISTRATION_REFUSED)


def build_shared_throttle(settings: Settings) -> Throttle | None:
    """The process-wide throttle when Redis is configured; ``None`` means the database's."""
    if settings.throttle.redis_url is None:
        return None
    return RedisThrottle(
        settings.throttle.redis_url,
        ThrottleLimits.from_settings(settings),
        key_prefix=settings.throttle.redis_key_prefix,
        timeout_seconds=settings.database.db_statement_timeout_seconds,
    )
