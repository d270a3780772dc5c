"""Sessions and their refresh-token chains. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db import DriverStatement, driver_connection, driver_engine
from authsvc.models import AuditEvent, AuthSession, RefreshToken, User


@dataclass(frozen=True, slots=True)
class ConsumedToken:
    id: uuid.UUID
    session_id: uuid.UUID
    token_hash: str


@dataclass(frozen=True, slots=True)
class SessionHead:
    """What a rotation needs to know about the session it extends."""

    id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenState:
    """Everything needed to say why a refresh token could not be consumed."""

    token_id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    token_hash: str
    token_expires_at: datetime
    consumed_at: datetime | None
    session_expires_at: datetime
    session_revoked_at: datetime | None
    user_disabled_at: datetime | None


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        *,
        user_id: uuid.UUID,
        now: datetime,
        expires_at: datetime,
        user_agent: str | None,
        ip_address: str | None,
        session_id: uuid.UUID | None = None,
    ) -> AuthSession:
        row = AuthSession(
            id=session_id or uuid.uuid4(),
            user_id=user_id,
            created_at=now,
            expires_at=expires_at,
            last_used_at=now,
            user_agent=user_agent,
            ip_address=ip_address,
        )
        self._session.add(row)
        await self._session.flush()
        return row

    async def add_token(
        self,
        *,
        session_id: uuid.UUID,
        token_hash: str,
        issued_at: datetime,
        expires_at: datetime,
        parent_id: uuid.UUID | None = None,
    ) -> None:
        self._session.add(
            RefreshToken(
                id=uuid.uuid4(),
                session_id=session_id,
                token_hash=token_hash,
                parent_id=parent_id,
                issued_at=issued_at,
                expires_at=expires_at,
            )
        )
        await self._session.flush()

    async def consume_active(
        self, token_hash: str, now: datetime, *, session_id: uuid.UUID | None = None
    ) -> ConsumedToken | None:
        """Mark a live token consumed, atomically; ``None`` when it was not live.

        A single conditional ``UPDATE ... RETURNING``: of N concurrent callers exactly
        one gets the row (PostgreSQL re-checks the condition after the row lock is
        released; SQLite serialises writers with ``BEGIN IMMEDIATE``). With ``session_id``
        (the token's ``sid``) the statement also filters by it (see ``_by_session``).
        """
        result = await self._session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == token_hash,
                RefreshToken.consumed_at.is_(None),
                RefreshToken.expires_at > now,
                *_by_session(RefreshToken.session_id, session_id),
            )
            .values(consumed_at=now)
            .returning(RefreshToken.id, RefreshToken.session_id, RefreshToken.token_hash)
            .execution_options(synchronize_session=False)
        )
        row = result.one_or_none()
        return ConsumedToken(row.id, row.session_id, row.token_hash) if row else None

    async def touch_active(
        self, session_id: uuid.UUID, now: datetime, *, ip_address: str | None = None
    ) -> SessionHead | None:
        """Record use of a live session and return it; ``None`` if revoked or past its cap."""
        values: dict[str, object] = {"last_used_at": now}
        if ip_address is not None:
            values["ip_address"] = ip_address
        result = await self._session.execute(
            update(AuthSession)
            .where(
                AuthSession.id == session_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > now,
            )
            .values(**values)
            .returning(AuthSession.id, AuthSession.user_id, AuthSession.expires_at)
            .execution_options(synchronize_session=False)
        )
        row = result.one_or_none()
        return SessionHead(row.id, row.user_id, row.expires_at) if row else None

    async def rotate(
        self,
        *,
        token_hash: str,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        now: datetime,
        ip_address: str | None,
        successor_hash: str,
        successor_expires_at: datetime,
        audit: AuditEvent | None = None,
    ) -> bool:
        """PostgreSQL: a whole rotation in ONE statement (data-modifying CTEs); whether it
        happened. Either all of it happens or nothing does:

        1. the session (by id, and of ``user_id``) is locked if it is live with its cap at or
           after ``successor_expires_at`` (so the successor's expiry is not cut by the cap);
        2. the presented token is consumed if it is live and belongs to that session;
        3. the session is touched (``last_used_at``, ``ip_address`` when known);
        4. the successor is inserted, its parent the consumed token;
        5. with ``audit``, the rotation's audit row is inserted too.

        Every step depends on the one before, so a token already consumed, a session revoked
        or capped, or a cap that would shorten the successor change nothing: the caller then
        takes the general path, which tells these apart. Concurrent presentations of one
        token queue on the session's row lock; the first consumes it, the others find it
        consumed (PostgreSQL re-checks the condition on the row's newest version). Every
        statement filters by session id, so the tables can be distributed by it.
        """
        params = {
            "token_hash": token_hash,
            "session_id": session_id,
            "user_id": user_id,
            "now": now,
            "ip_address": ip_address,
            "successor_id": uuid.uuid4(),
            "successor_hash": successor_hash,
            "successor_expires_at": successor_expires_at,
        }
        statement = _ROTATE
        if audit is not None:
            statement = _ROTATE_AUDITED
            params.update(
                audit_occurred_at=audit.occurred_at,
                audit_event=audit.event,
                audit_username=audit.username,
                audit_user_agent=audit.user_agent,
                audit_detail=audit.detail,
                audit_ip_address=audit.ip_address,
            )
        engine = driver_engine(self._session)
        if engine is not None:
            driver_statement = _ROTATE_AUDITED_SQL if audit is not None else _ROTATE_SQL
            async with driver_connection(engine) as connection:
                row = await connection.fetchrow(
                    driver_statement.sql, *driver_statement.args(params)
                )
            return row is not None
        connection = await self._session.connection()
        result = await connection.execute(statement, params)
        return result.scalar_one_or_none() is not None

    async def token_state(
        self, token_hash: str, *, session_id: uuid.UUID | None = None
    ) -> TokenState | None:
        result = await self._session.execute(
            select(
                RefreshToken.id,
                RefreshToken.session_id,
                AuthSession.user_id,
                RefreshToken.token_hash,
                RefreshToken.expires_at,
                RefreshToken.consumed_at,
                AuthSession.expires_at,
                AuthSession.revoked_at,
                User.disabled_at,
            )
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .join(User, User.id == AuthSession.user_id)
            .where(
                RefreshToken.token_hash == token_hash,
                *_by_session(RefreshToken.session_id, session_id),
            )
        )
        row = result.one_or_none()
        return TokenState(*row) if row else None

    async def live_successor(
        self, parent_id: uuid.UUID, now: datetime, *, session_id: uuid.UUID | None = None
    ) -> RefreshToken | None:
        """The unconsumed, unexpired token that replaced ``parent_id``, if it is the newest."""
        result = await self._session.execute(
            select(RefreshToken).where(
                RefreshToken.parent_id == parent_id,
                RefreshToken.consumed_at.is_(None),
                RefreshToken.expires_at > now,
                *_by_session(RefreshToken.session_id, session_id),
            )
        )
        return result.scalar_one_or_none()

    async def revoke(self, session_id: uuid.UUID, now: datetime, reason: str) -> bool:
        """Revoke one session; ``False`` if it was already revoked or does not exist."""
        result = await self._session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(AuthSession.id)
            .execution_options(synchronize_session=False)
        )
        return result.one_or_none() is not None

    async def revoke_all_for_user(self, user_id: uuid.UUID, now: datetime, reason: str) -> int:
        result = await self._session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(AuthSession.id)
            .execution_options(synchronize_session=False)
        )
        return len(result.all())

    async def active_user(
        self, *, session_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> User | None:
        """The user of a live session (not revoked, within its cap, user enabled).

        The bearer check of every protected request: one ``SELECT`` by the session's primary
        key (its user's too). On PostgreSQL through the driver in autocommit
        (``db.driver_connection``); elsewhere compiled once (``_ACTIVE_USER``) in the caller's
        unit. The user is built from the row without the ORM's identity map.
        """
        params = {"session_id": session_id, "user_id": user_id, "now": now}
        engine = driver_engine(self._session)
        if engine is not None:
            async with driver_connection(engine) as connection:
                row = await connection.fetchrow(
                    _ACTIVE_USER_SQL.sql, *_ACTIVE_USER_SQL.args(params)
                )
        else:
            connection = await self._session.connection()
            row = (await connection.execute(_ACTIVE_USER, params)).one_or_none()
        if row is None:
            return None
        return User(
            id=row[0],
            username=row[1],
            password_hash=row[2],
            created_at=row[3],
            disabled_at=None,
        )

    async def list_live(
        self, user_id: uuid.UUID, now: datetime
    ) -> list[tuple[AuthSession, datetime]]:
        """The user's sessions that can still be refreshed, newest first, each with the time
        it ends unless used again (its newest live token's expiry, never past its cap)."""
        live = (
            select(RefreshToken.session_id, func.max(RefreshToken.expires_at).label("until"))
            .where(RefreshToken.consumed_at.is_(None), RefreshToken.expires_at > now)
            .group_by(RefreshToken.session_id)
            .subquery()
        )
        result = await self._session.execute(
            select(AuthSession, live.c.until)
            .join(live, live.c.session_id == AuthSession.id)
            .where(
                AuthSession.user_id == user_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > now,
            )
            .order_by(AuthSession.created_at.desc(), AuthSession.id)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def owner_of(self, session_id: uuid.UUID) -> uuid.UUID | None:
        """The user a session belongs to, or ``None`` if there is no such session."""
        result = await self._session.execute(
            select(AuthSession.user_id).where(AuthSession.id == session_id)
        )
        return result.scalar_one_or_none()


_ACTIVE_USER = (
    select(User.id, User.username, User.password_hash, User.created_at)
    .join_from(AuthSession, User, AuthSession.user_id == User.id)
    .where(
        AuthSession.id == bindparam("session_id"),
        AuthSession.user_id == bindparam("user_id"),
        User.id == bindparam("user_id"),
        AuthSession.revoked_at.is_(None),
        AuthSession.expires_at > bindparam("now"),
        User.disabled_at.is_(None),
    )
)


def _by_session(column: Any, session_id: uuid.UUID | None) -> list[Any]:
    """The extra condition ``column = session_id``, when the session id is known.

    It changes no result (a token's row always names the session its ``sid`` claim does),
    but a statement that filters by session id runs on one shard only if the tables are
    ever distributed by it (docs/deployment.md, "capacity model").
    """
    return [] if session_id is None else [column == session_id]


# One rotation, one statement (``SessionRepository.rotate``). Plain SQL: SQLAlchemy caches
# it by its text and asyncpg prepares it once per connection.
_ROTATE_CTES = """
WITH live AS (
    SELECT id FROM sessions
    WHERE id = :session_id AND user_id = :user_id AND revoked_at IS NULL
      AND expires_at >= :successor_expires_at
    FOR UPDATE
), consumed AS (
    UPDATE refresh_tokens SET consumed_at = :now
    WHERE token_hash = :token_hash AND session_id = (SELECT id FROM live)
      AND consumed_at IS NULL AND expires_at > :now
    RETURNING id, session_id
), touched AS (
    UPDATE sessions
    SET last_used_at = :now, ip_address = COALESCE(:ip_address, ip_address)
    WHERE id = (SELECT session_id FROM consumed)
    RETURNING id
), successor AS (
    INSERT INTO refresh_tokens (id, session_id, token_hash, parent_id, issued_at, expires_at)
    SELECT CAST(:successor_id AS uuid), session_id, CAST(:successor_hash AS varchar), id,
        CAST(:now AS timestamptz), CAST(:successor_expires_at AS timestamptz)
    FROM consumed
    RETURNING id
)"""
_ROTATE_AUDIT_CTE = """, audit AS (
    INSERT INTO audit_events
        (occurred_at, event, user_id, username, session_id, ip_address, user_agent, detail)
    SELECT CAST(:audit_occurred_at AS timestamptz), CAST(:audit_event AS varchar),
        CAST(:user_id AS uuid), CAST(:audit_username AS varchar), session_id,
        CAST(:audit_ip_address AS varchar), CAST(:audit_user_agent AS varchar),
        CAST(:audit_detail AS varchar)
    FROM consumed
    RETURNING id
)"""
_ROTATE_RESULT = """
SELECT successor.id FROM successor JOIN touched ON true"""
_ROTATE = text(_ROTATE_CTES + _ROTATE_RESULT)
_ROTATE_AUDITED = text(_ROTATE_CTES + _ROTATE_AUDIT_CTE + _ROTATE_RESULT)
_ROTATE_SQL = DriverStatement(_ROTATE_CTES + _ROTATE_RESULT)
_ROTATE_AUDITED_SQL = DriverStatement(_ROTATE_CTES + _ROTATE_AUDIT_CTE + _ROTATE_RESULT)
# The bearer check (``active_user``) and the rotation, for the driver (PostgreSQL).
_ACTIVE_USER_SQL = DriverStatement(
    """SELECT u.id, u.username, u.password_hash, u.created_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.id = :session_id AND s.user_id = :user_id AND u.id = :user_id
  AND s.revoked_at IS NULL AND s.expires_at > :now AND u.disabled_at IS NULL"""
)
