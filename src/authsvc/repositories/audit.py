"""The audit trail's rows: appended, read back; never updated or deleted. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.models import AuditEvent, User
from authsvc.security.usernames import normalize_username


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One event with the username filled in from the user row when the event lacks it."""

    event: AuditEvent
    username: str | None


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def append(self, row: AuditEvent) -> None:
        """Stage one event row (written at the caller's commit)."""
        self._session.add(row)

    async def find(
        self, *, username: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> Sequence[AuditLine]:
        """The newest ``limit`` events, oldest first, optionally of one user and/or since a moment.

        Events name their user by id, by username or both (a failed login for an unknown
        name has only the name); a username filter matches either.
        """
        query = (
            select(AuditEvent, User.username)
            .outerjoin(User, User.id == AuditEvent.user_id)
            .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
            .limit(limit)
        )
        if username is not None:
            name = normalize_username(username)
            query = query.where(or_(AuditEvent.username == name, User.username == name))
        if since is not None:
            query = query.where(AuditEvent.occurred_at >= since)
        rows = (await self._session.execute(query)).all()
        return [AuditLine(row[0], row[0].username or row[1]) for row in reversed(rows)]
