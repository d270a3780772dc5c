"""The append-only audit trail: ``EventSink``s that write ``audit_events`` rows.

Events are written in their own short transactions, after the change they report was
committed, so a failing audit write can never undo (or turn into an error) a login that
already succeeded: it is logged and dropped. Events never carry a token or a password;
free-text fields are cut to their column's length.

``DatabaseEventSink`` writes each event before ``record`` returns (the CLI uses it).
``BufferedEventSink`` (the server's) hands events to one background writer that inserts
whatever has queued up in one transaction: the request does not wait for the audit write,
and under load many events share a commit. Shutdown drains the queue; a crash can lose the
events of the last moments (typically milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def _write(sessionmaker: async_sessionmaker[AsyncSession], rows: list[AuditEvent]) -> None:
    try:
        async with sessionmaker() as db:
            repo = AuditRepository(db)
            for row in rows:
                repo.append(row)
            await db.commit()
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("%d audit event(s) not recorded: %s", len(rows), type(exc).__name__)


class BufferedEventSink:
    """Queues events for one background writer; see the module docstring."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = 500,
        max_queue: int = 100_000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._max_batch = max_batch
        self._queue: asyncio.Queue[AuditEvent | None] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="authsvc-audit-writer")

    async def record(self, event: AuthEvent) -> None:
        try:
            self._queue.put_nowait(to_row(event))
        except asyncio.QueueFull:
            # The database has been unreachable for a long while: shed audit rows rather
            # than memory or requests.
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("audit queue full: %d event(s) dropped so far", self.dropped)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [] if first is None else [first]
            stop = first is None
            while not stop and len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                await _write(self._sessionmaker, batch)
            if stop:
                return

    async def aclose(self, drain_seconds: float = 10) -> None:
        """Write what is queued, then stop the writer."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.QueueFull):  # full: the timeout below cancels it
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain_seconds)
        except TimeoutError:
            logger.warning("audit writer did not drain within %ss", drain_seconds)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None


class AuditQuery:
    """Reads the trail back (``authsvc audit``)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def events(
        self, *, username: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> Sequence[AuditLine]:
        """The newest ``limit`` matching events, oldest first."""
        return await AuditRepository(self._db).find(username=username, since=since, limit=limit)
