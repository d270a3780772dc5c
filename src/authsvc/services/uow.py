"""The unit of work: the one place where the services' transactions begin and end.

- ``async with uow.read():`` a read-only transaction (a deferred ``BEGIN`` on SQLite, so it
  never queues behind writers), always rolled back. What it loaded stays readable after it
  (the objects are detached, not expired).
- ``async with uow.write():`` a write transaction, committed once when the block ends and
  rolled back if it raises. On SQLite the writers of a process take turns
  (``db.WriterTurns``) and each begins with ``BEGIN IMMEDIATE``, so one that reads before it
  writes cannot fail half way; workers queue on the database's busy timeout.

A use case that refuses after a change (reuse detection revokes the session, then answers
403) returns its refusal out of the unit and raises it once the unit has committed.

Units nest: an inner ``read()`` or ``write()`` joins the unit that is open on the session.

Events are recorded with the change they describe: ``uow.record(event)`` inside a write unit
stages the event's audit row, which is written in that unit's transaction (the event exists if
and only if the change was committed). The other sinks (metrics, logs) see the event after the
commit. ``await uow.report(event)`` is for an event that records no change (a failed or
throttled attempt): its audit row gets a short transaction of its own, best-effort; when that
fails, the event goes to the sinks marked ``audited=False`` (counted in ``/metrics``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db import begin_read_only, writer_turns
from authsvc.errors import ServiceUnavailable
from authsvc.repositories.audit import AuditRepository
from authsvc.services.audit import to_row
from authsvc.services.events import AuthEvent, EventSink, NullSink

logger = logging.getLogger("authsvc.audit")
_UNIT = "authsvc.unit"


@dataclass(slots=True)
class _Unit:
    kind: Literal["read", "write"]
    events: list[AuthEvent] = field(default_factory=list)


class UnitOfWork:
    """The transactions of one session (one request, or one CLI command)."""

    def __init__(self, db: AsyncSession, events: EventSink | None = None) -> None:
        self._db = db
        self._sinks = events or NullSink()

    @property
    def _unit(self) -> _Unit | None:
        unit: _Unit | None = self._db.info.get(_UNIT)
        return unit

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        if self._unit is not None or self._db.in_transaction():
            # Joins the open unit (or a transaction its caller began and will end).
            yield
            return
        self._db.info[_UNIT] = _Unit("read")
        try:
            await begin_read_only(self._db)
            yield
        finally:
            del self._db.info[_UNIT]
            # Detached, what the unit loaded stays readable (a rollback would expire it).
            self._db.expunge_all()
            await self._db.rollback()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        outer = self._unit
        if outer is not None:
            if outer.kind != "write":
                raise RuntimeError("a read unit cannot write")
            yield
            return
        # A transaction the caller began (its own statements) becomes part of this unit.
        turns = writer_turns(self._db)
        async with turns.turn() if turns is not None else contextlib.nullcontext():
            unit = self._db.info[_UNIT] = _Unit("write")
            try:
                yield
                await self._commit(unit)
            except BaseException:
                with contextlib.suppress(SQLAlchemyError, OSError):
                    await self._db.rollback()
                raise
            finally:
                self._db.info.pop(_UNIT, None)
        await self._dispatch(unit.events)

    def require_no_unit(self, why: str) -> None:
        """Refuse to run inside a unit: the caller's next unit must commit on its own."""
        if self._unit is not None:
            raise RuntimeError(f"must not run inside a unit of work: {why}")

    def record(self, event: AuthEvent) -> None:
        """Stage ``event`` in the open write unit: written with its change, or not at all."""
        unit = self._unit
        if unit is None or unit.kind != "write":
            raise RuntimeError("record outside a write unit")
        unit.events.append(event)

    async def report(self, event: AuthEvent) -> None:
        """Write an event that records no change, best-effort, then tell the sinks."""
        if self._unit is not None:
            raise RuntimeError("report inside a unit: use record")
        try:
            async with self.write():
                self.record(event)
        except (SQLAlchemyError, OSError, ServiceUnavailable) as exc:
            # The answer does not depend on it; the log names the event, never its data.
            logger.warning("audit event %s not recorded: %s", event.type, type(exc).__name__)
            await self._dispatch([replace(event, audited=False)])

    async def announce(self, event: AuthEvent) -> None:
        """Tell the sinks of an event whose audit row the caller wrote with its change (a
        rotation in one statement, ``SessionRepository.rotate``)."""
        await self._dispatch([event])

    async def _commit(self, unit: _Unit) -> None:
        audit = AuditRepository(self._db)
        for event in unit.events:
            audit.append(to_row(event))
        await self._db.commit()

    async def _dispatch(self, events: list[AuthEvent]) -> None:
        for event in events:
            await self._sinks.record(event)
