"""The append-only audit trail: an ``EventSink`` that writes ``audit_events`` rows.

Each event is written in its own short transaction, after the change it reports was
committed, so a failing audit write can never undo (or turn into an error) a login that
already succeeded: it is logged and dropped. Events never carry a token or a password;
free-text fields are cut to their column's length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authsvc.models import AuditEvent
from authsvc.repositories.audit import AuditLine, AuditRepository
from authsvc.services.events import AuthEvent

logger = logging.getLogger("authsvc.audit")


def _cut(value: str | None, length: int) -> str | None:
    return None if value is None else value.replace("\x00", "")[:length]


def to_row(event: AuthEvent) -> AuditEvent:
    """The row for one event (user agent and detail cut to fit, NUL bytes dropped)."""
    return AuditEvent(
        occurred_at=event.at,
        event=str(event.type),
        user_id=event.user_id,
        username=_cut(event.username, 64),
        session_id=event.session_id,
        ip_address=_cut(event.ip_address, 64),
        user_agent=_cut(event.user_agent, 512),
        detail=_cut(event.detail, 255),
    )


class DatabaseEventSink:
    """Writes every event to ``audit_events``, one short transaction per event."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def record(self, event: AuthEvent) -> None:
        row = to_row(event)
        try:
            async with self._sessionmaker() as db:
                AuditRepository(db).append(row)
                await db.commit()
        except (SQLAlchemyError, OSError) as exc:
            # The reported change is committed already; losing its audit row must not turn
            # the response into an error. The log line names the event, never its data.
            logger.warning("audit event %s not recorded: %s", event.type, type(exc).__name__)


class AuditQuery:
    """Reads the trail back (``authsvc audit``)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def events(
        self, *, username: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> Sequence[AuditLine]:
        """The newest ``limit`` matching events, oldest first."""
        return await AuditRepository(self._db).find(username=username, since=since, limit=limit)
