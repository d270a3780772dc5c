"""Deleting what nobody needs any more: ``authsvc purge`` and the periodic purge in ``serve``.

Only sessions whose absolute cap has passed go (with their refresh tokens): until then a
rotated token of the session is evidence reuse detection needs. Login and registration
attempts go once no limit's window counts them any more, known addresses once they are older
than ``AUTHSVC_LOGIN_KNOWN_ADDRESS_DAYS``. Deletes run in small batches, each its own
short transaction, so no table stays locked for long; on PostgreSQL each batch is claimed
with ``FOR UPDATE SKIP LOCKED`` so instances purging at the same time share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authsvc.config import Settings
from authsvc.repositories.housekeeping import HousekeepingRepository
from authsvc.services.throttle import ThrottleLimits
from authsvc.services.uow import UnitOfWork

logger = logging.getLogger("authsvc.purge")
IdT = TypeVar("IdT")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    sessions: int
    login_failures: int
    registration_attempts: int = 0
    known_addresses: int = 0

    @property
    def attempts(self) -> int:
        """Login and registration attempts together."""
        return self.login_failures + self.registration_attempts


async def _in_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    batch_size: int,
    find: Callable[[HousekeepingRepository], Awaitable[Sequence[IdT]]],
    remove: Callable[[HousekeepingRepository, Sequence[IdT]], Awaitable[int]],
) -> int:
    total = 0
    while True:
        async with sessionmaker() as db, UnitOfWork(db).write():
            repo = HousekeepingRepository(db)
            ids = await find(repo)
            deleted = await remove(repo, ids)
        total += deleted
        if len(ids) < batch_size:
            return total


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> PurgeResult:
    """Delete capped sessions (and their tokens), stale attempts and known addresses."""
    batch = settings.purge_batch_size
    # A token is judged with up to the clock-skew leeway; keep its session that much longer.
    session_cutoff = now - timedelta(seconds=settings.clock_skew_seconds)
    # A failure counts toward the account cap for longer than the per-address window.
    failure_cutoff = now - timedelta(
        seconds=ThrottleLimits.from_settings(settings).retention_seconds
    )
    sessions = await _in_batches(
        sessionmaker,
        batch,
        lambda repo: repo.capped_session_ids(session_cutoff, batch),
        lambda repo, ids: repo.delete_sessions(ids),
    )
    failures = await _in_batches(
        sessionmaker,
        batch,
        lambda repo: repo.stale_failure_ids(failure_cutoff, batch),
        lambda repo, ids: repo.delete_failures(ids),
    )
    registrations = await _in_batches(
        sessionmaker,
        batch,
        lambda repo: repo.stale_registration_ids(
            now - timedelta(seconds=settings.register_window_seconds), batch
        ),
        lambda repo, ids: repo.delete_registrations(ids),
    )
    known = await _in_batches(
        sessionmaker,
        batch,
        lambda repo: repo.stale_known_address_ids(
            now - timedelta(days=settings.login_known_address_days), batch
        ),
        lambda repo, ids: repo.delete_known_addresses(ids),
    )
    return PurgeResult(
        sessions=sessions,
        login_failures=failures,
        registration_attempts=registrations,
        known_addresses=known,
    )


async def _purge_forever(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    while True:
        await asyncio.sleep(settings.purge_interval_seconds)
        try:
            result = await purge(sessionmaker, settings, datetime.now(UTC))
        except (SQLAlchemyError, OSError) as exc:
            # The database may be down for a while; the next round tries again.
            logger.warning("background purge failed: %s", type(exc).__name__)
            continue
        if result.sessions or result.attempts or result.known_addresses:
            logger.info(
                "purged %d session(s), %d attempt record(s) and %d known address(es)",
                result.sessions,
                result.attempts,
                result.known_addresses,
            )


def start_background_purge(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> asyncio.Task[None] | None:
    """Start the periodic purge (every ``AUTHSVC_PURGE_INTERVAL_SECONDS``; 0: never)."""
    if settings.purge_interval_seconds <= 0:
        return None
    return asyncio.create_task(_purge_forever(settings, sessionmaker), name="authsvc-purge")


async def stop_background_purge(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
