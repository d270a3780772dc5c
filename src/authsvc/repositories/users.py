"""User rows: add, find, update. Never commits."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.models import User
from authsvc.security.usernames import normalize_username


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self._session.get(User, user_id)

    async def get_by_username(self, username: str) -> User | None:
        result = await self._session.execute(
            select(User).where(User.username == normalize_username(username))
        )
        return result.scalar_one_or_none()

    async def add(self, *, username: str, password_hash: str, now: datetime) -> User:
        user = User(
            id=uuid.uuid4(),
            username=normalize_username(username),
            password_hash=password_hash,
            created_at=now,
        )
        self._session.add(user)
        await self._session.flush()
        return user

    async def lock_if_enabled(self, user_id: uuid.UUID) -> bool:
        """Lock the user's row if the account is enabled; ``False`` if it is disabled now.

        Taken by a login before it starts a session: a concurrent ``disable`` then either
        happened first (and is seen here) or waits, and its revocation covers the new session.
        """
        result = await self._session.execute(
            select(User.id).where(User.id == user_id, User.disabled_at.is_(None)).with_for_update()
        )
        return result.first() is not None

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._session.execute(
            update(User).where(User.id == user_id).values(password_hash=password_hash)
        )

    async def set_disabled(self, user_id: uuid.UUID, disabled_at: datetime | None) -> None:
        await self._session.execute(
            update(User).where(User.id == user_id).values(disabled_at=disabled_at)
        )
