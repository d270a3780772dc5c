"""Administrative use cases on accounts (the CLI's)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.repositories.sessions import SessionRepository
from authsvc.repositories.users import UserRepository
from authsvc.services.events import AuthEvent, EventSink, EventType
from authsvc.services.uow import UnitOfWork


class UnknownUser(LookupError):
    pass


class UserAdminService:
    def __init__(self, db: AsyncSession, events: EventSink | None = None) -> None:
        self._uow = UnitOfWork(db, events)
        self._users = UserRepository(db)
        self._sessions = SessionRepository(db)

    async def disable(self, username: str, now: datetime) -> int:
        """Disable the account and revoke all its sessions at once; returns how many."""
        async with self._uow.write():
            user = await self._users.get_by_username(username)
            if user is None:
                raise UnknownUser(username)
            await self._users.set_disabled(user.id, now)
            revoked = await self._sessions.revoke_all_for_user(user.id, now, "user_disabled")
            self._uow.record(
                AuthEvent(
                    EventType.USER_DISABLED,
                    now,
                    user_id=user.id,
                    username=user.username,
                    sessions_revoked=revoked,
                )
            )
        return revoked

    async def enable(self, username: str, now: datetime | None = None) -> None:
        """Enable the account again (its revoked sessions stay revoked)."""
        async with self._uow.write():
            user = await self._users.get_by_username(username)
            if user is None:
                raise UnknownUser(username)
            await self._users.set_disabled(user.id, None)
            if now is not None:
                self._uow.record(
                    AuthEvent(EventType.USER_ENABLED, now, user_id=user.id, username=user.username)
                )
