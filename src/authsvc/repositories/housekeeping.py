"""Finding and deleting records nobody needs any more, a batch at a time. Never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.models import (
    AuthSession,
    KnownAddress,
    LoginFailure,
    RefreshToken,
    RegistrationAttempt,
)


class HousekeepingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def _claim(self, query: Select[Any]) -> Select[Any]:
        # On PostgreSQL, lock the batch and skip rows another instance is purging already, so
        # several instances never wait on each other. SQLite has one writer anyway.
        if self._session.get_bind().dialect.name == "postgresql":
            return query.with_for_update(skip_locked=True)
        return query

    async def capped_session_ids(self, cutoff: datetime, limit: int) -> Sequence[uuid.UUID]:
        """Up to ``limit`` sessions whose absolute cap passed before ``cutoff``."""
        query = select(AuthSession.id).where(AuthSession.expires_at < cutoff).limit(limit)
        result = await self._session.execute(self._claim(query))
        return [uuid.UUID(str(i)) if not isinstance(i, uuid.UUID) else i for i in result.scalars()]

    async def delete_sessions(self, ids: Sequence[uuid.UUID]) -> int:
        """Delete these sessions and their refresh tokens (children first, cascade or not)."""
        if not ids:
            return 0
        await self._session.execute(
            delete(RefreshToken)
            .where(RefreshToken.session_id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(
            delete(AuthSession)
            .where(AuthSession.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def stale_failure_ids(self, cutoff: datetime, limit: int) -> Sequence[int]:
        """Up to ``limit`` failed-login records older than ``cutoff``."""
        query = select(LoginFailure.id).where(LoginFailure.attempted_at < cutoff).limit(limit)
        result = await self._session.execute(self._claim(query))
        return [int(i) for i in result.scalars()]

    async def delete_failures(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        result = await self._session.execute(
            delete(LoginFailure)
            .where(LoginFailure.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def stale_registration_ids(self, cutoff: datetime, limit: int) -> Sequence[int]:
        """Up to ``limit`` registration attempts older than ``cutoff``."""
        query = (
            select(RegistrationAttempt.id)
            .where(RegistrationAttempt.attempted_at < cutoff)
            .limit(limit)
        )
        result = await self._session.execute(self._claim(query))
        return [int(i) for i in result.scalars()]

    async def delete_registrations(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        result = await self._session.execute(
            delete(RegistrationAttempt)
            .where(RegistrationAttempt.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def stale_known_address_ids(self, cutoff: datetime, limit: int) -> Sequence[int]:
        """Up to ``limit`` known addresses last logged in from before ``cutoff``."""
        query = select(KnownAddress.id).where(KnownAddress.last_login_at < cutoff).limit(limit)
        result = await self._session.execute(self._claim(query))
        return [int(i) for i in result.scalars()]

    async def delete_known_addresses(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        result = await self._session.execute(
            delete(KnownAddress)
            .where(KnownAddress.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
