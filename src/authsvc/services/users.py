"""Administrative use cases on accounts (the CLI's)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.repositories.sessions import SessionRepository
from authsvc.repositories.users import UserRepository
from authsvc.services.events import AuthEvent, EventSink, EventType, NullSink


class UnknownUser(LookupError):
    pass


class UserAdminService:
    def __init__(self, db: AsyncSession, events: EventSink | None = None) -> None:
        self._db = db
        self._events = events or NullSink()
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
        await self._events.record(
            AuthEvent(
                EventType.USER_DISABLED,
                now,
                user_id=user.id,
                username=user.username,
                detail=f"{revoked} session(s) revoked",
                extra={"sessions_revoked": str(revoked)},
            )
        )
        return revoked

    async def enable(self, username: str, now: datetime | None = None) -> None:
        """Enable the account again (its revoked sessions stay revoked)."""
        user = await self._users.get_by_username(username)
        if user is None:
            raise UnknownUser(username)
        await self._users.set_disabled(user.id, None)
        await self._db.commit()
        if now is not None:
            await self._events.record(
                AuthEvent(EventType.USER_ENABLED, now, user_id=user.id, username=user.username)
            )
