"""Administrative use cases on accounts (the CLI's)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.repositories.sessions import SessionRepository
from authsvc.repositories.users import UserRepository


class UnknownUser(LookupError):
    pass


class UserAdminService:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db
        self._users = UserRepository(db)
        self._sessions = SessionRepository(db)

    async def disable(self, username: str, now: datetime) -> int:
        """Disable the account and revoke all its sessions at once; returns how many."""
        user = await self._users.get_by_username(username)
        if user is None:
            raise UnknownUser(username)
        await self._users.set_disabled(user.id, now)
        revoked = await self._sessions.revoke_all_for_user(user.id, now, "user_disabled")
        await self._db.commit()
        return revoked

    async def enable(self, username: str) -> None:
        user = await self._users.get_by_username(username)
        if user is None:
            raise UnknownUser(username)
        await self._users.set_disabled(user.id, None)
        await self._db.commit()
