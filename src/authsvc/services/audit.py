"""The append-only audit trail: the row of an event, and reading the trail back.

Rows are written by the unit of work (``services.uow``), in the transaction of the change
they record. Events never carry a token or a password; free-text fields are cut to their
column's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.models import AuditEvent
from authsvc.repositories.audit import AuditLine, AuditRepository
from authsvc.services.events import AuthEvent


def _cut(value: str | None, length: int) -> str | None:
    return None if value is None else value.replace("\x00", "")[:length]


def to_row(event: AuthEvent) -> AuditEvent:
    """The row for one event (user agent and detail cut to fit, NUL bytes dropped).

    A username is kept only once it is known to be a user's, as in the logs: what was typed
    as the username of a failed login is often a password typed into the wrong field.
    """
    return AuditEvent(
        occurred_at=event.at,
        event=str(event.type),
        user_id=event.user_id,
        username=_cut(event.username, 64) if event.user_id is not None else None,
        session_id=event.session_id,
        ip_address=_cut(event.ip_address, 64),
        user_agent=_cut(event.user_agent, 512),
        detail=_cut(event.detail, 255),
    )


class AuditQuery:
    """Reads the trail back (``authsvc audit``)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def events(
        self, *, username: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> Sequence[AuditLine]:
        """The newest ``limit`` matching events, oldest first."""
        return await AuditRepository(self._db).find(username=username, since=since, limit=limit)
