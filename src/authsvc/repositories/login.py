"""A login's statements on PostgreSQL through the driver (``db.driver_connection``): few round
trips, each a statement in autocommit. Never used inside a unit of work's transaction; SQLite
and PgBouncer take the units of work and the other repositories instead.

1. ``start``: the user by username, whether the client's address is known to the account,
   whether a throttle window is full already and, when none is, the attempt's row: one
   statement, committed when it ends.
2. (``ThrottleRepository.count_login_attempt``: the count after that commit.)
3. ``finish``: after a right password, everything the login changes, with its audit row, in
   one statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from authsvc.db import DriverStatement, driver_connection, driver_engine
from authsvc.models import AuditEvent
from authsvc.repositories.throttle import LOGIN_BLOCKERS_SQL, LoginWindow, window_params


@dataclass(frozen=True, slots=True)
class LoginStart:
    """What a login knows before its password is checked."""

    user: tuple[uuid.UUID, str, datetime | None] | None  # id, password hash, disabled_at
    known: bool
    # For each window asked about: its blocker (``ThrottleRepository.login_blockers``).
    blockers: list[datetime | None]
    # The attempt's row, committed; ``None`` when a window was full (nothing was written) or
    # when no window was asked about.
    attempt_id: int | None


class LoginRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @property
    def _engine(self) -> AsyncEngine:
        engine = driver_engine(self._session)
        if engine is None:
            raise RuntimeError("a login through the driver needs db.driver_engine")
        return engine

    async def start(
        self,
        *,
        username: str,
        address: str,
        digests: Sequence[str],
        known_since: datetime | None,
        windows: Sequence[tuple[LoginWindow, datetime, int]],
        now: datetime,
    ) -> LoginStart:
        """One statement in autocommit: the user, the known address (``known_since`` ``None``:
        none is) and, with ``windows`` (all three, the database's throttle), their blockers,
        the account's skipped from a known address. When none blocks, the attempt's row is
        inserted in the same statement and committed with it; a full window writes nothing.

        That commit does not wait for the WAL to reach the disk (``synchronous_commit`` off
        for this statement only): concurrent logins see the row as soon as it commits, which
        is all the count needs, and the login does not wait on a flush before it hashes. A
        crash of PostgreSQL in the next fraction of a second may lose the row (an attempt
        then goes uncounted); the login's own change (``finish``) is flushed before it is
        answered, as the contract's *Durability* asks.
        """
        params: dict[str, object] = {
            "username": username,
            "address": address,
            "digests": list(digests),
            "known_since": known_since,
            "now": now,
            "attempt_id": None,
        }
        if windows:
            params.update(window_params(windows))
            statement = _START_COUNTED
        else:
            statement = _START
        async with driver_connection(self._engine) as connection:
            row = await connection.fetchrow(statement.sql, *statement.args(params))
        user = (row[0], row[1], row[2]) if row[0] is not None else None
        if not windows:
            return LoginStart(user, bool(row[3]), [], None)
        return LoginStart(user, bool(row[3]), [row[4], row[5], row[6]], row[7])

    async def finish(
        self,
        *,
        user_id: uuid.UUID,
        enabled: bool,
        new_hash: str | None,
        attempt_id: int | None,
        username: str,
        remember_digest: str | None,
        now: datetime,
        session_id: uuid.UUID,
        session_expires_at: datetime,
        user_agent: str | None,
        ip_address: str | None,
        token_hash: str,
        token_expires_at: datetime,
        audit: AuditEvent,
        disabled_event: str,
    ) -> bool:
        """After a right password, ONE statement (data-modifying CTEs); whether the session
        was started. All of it commits together, or none of it:

        1. the user's row is locked if the account is enabled (``enabled``: it was when read;
           the statement checks again), its hash replaced with ``new_hash`` if given;
        2. the attempt's row (``attempt_id``, the database's throttle) is deleted;
        3. when the account is enabled: its run of failures ends (the account window), the
           address (``remember_digest``) is remembered, and the session and its first refresh
           token are inserted;
        4. the audit row: ``audit`` (the session's) when it started; else the same row with
           the event ``disabled_event`` and no session.

        A concurrent ``disable`` either committed first (seen here: no session) or waits for
        the user's row lock, and its revocation covers the new session.
        """
        params: dict[str, object] = {
            "user_id": user_id,
            "enabled": enabled,
            "attempt_id": attempt_id,
            "username": username,
            "remember": remember_digest is not None,
            "digest": remember_digest or "",
            "now": now,
            "session_id": session_id,
            "session_expires_at": session_expires_at,
            "user_agent": user_agent,
            "ip_address": ip_address,
            "token_id": uuid.uuid4(),
            "token_hash": token_hash,
            "token_expires_at": token_expires_at,
            "audit_occurred_at": audit.occurred_at,
            "audit_event": audit.event,
            "disabled_event": disabled_event,
            "audit_username": audit.username,
            "audit_ip_address": audit.ip_address,
            "audit_user_agent": audit.user_agent,
            "audit_detail": audit.detail,
        }
        statement = _FINISH
        if new_hash is not None:
            params["new_hash"] = new_hash
            statement = _FINISH_REHASHED
        async with driver_connection(self._engine) as connection:
            started = await connection.fetchval(statement.sql, *statement.args(params))
        return bool(started)


_FOUND_AND_KNOWN = """
WITH found AS (
    SELECT id, password_hash, disabled_at FROM users WHERE username = :username
), known AS (
    SELECT EXISTS (
        SELECT 1 FROM known_addresses
        WHERE user_id = (SELECT id FROM found) AND address_digest = ANY(:digests)
          AND last_login_at > :known_since
    ) AS known
)"""
_START = DriverStatement(
    _FOUND_AND_KNOWN
    + """
SELECT found.id, found.password_hash, found.disabled_at, known.known
FROM known LEFT JOIN found ON true"""
)
_CHECKED_UNLESS_KNOWN = """, checked AS (
    SELECT NOT known AS check_account FROM known
), blockers AS (
    SELECT"""
_ATTEMPT_UNLESS_BLOCKED = """
), attempt AS (
    INSERT INTO login_failures (username, ip_address, attempted_at, counts_for_account)
    SELECT CAST(:username AS varchar), CAST(:address AS varchar), CAST(:now AS timestamptz),
        true
    FROM blockers WHERE pair IS NULL AND address IS NULL AND account IS NULL
    RETURNING id
)
SELECT found.id, found.password_hash, found.disabled_at, known.known,
    blockers.pair, blockers.address, blockers.account, (SELECT id FROM attempt),
    -- This statement's commit does not wait for its WAL flush (see ``start``).
    set_config('synchronous_commit', 'off', true)
FROM known CROSS JOIN blockers LEFT JOIN found ON true"""
_START_COUNTED = DriverStatement(
    _FOUND_AND_KNOWN + _CHECKED_UNLESS_KNOWN + LOGIN_BLOCKERS_SQL + _ATTEMPT_UNLESS_BLOCKED
)

_LOCK = """
WITH live AS (
    SELECT id FROM users WHERE id = :user_id AND disabled_at IS NULL AND :enabled
    FOR UPDATE
)"""
# Replacing the hash locks the row as well (and a disable waits for it the same way).
_LOCK_REHASHED = """
WITH live AS (
    UPDATE users SET password_hash = :new_hash
    WHERE id = :user_id AND disabled_at IS NULL AND :enabled
    RETURNING id
)"""
_FINISH_REST = """, given_back AS (
    DELETE FROM login_failures WHERE id = :attempt_id
), run_ended AS (
    UPDATE login_failures SET counts_for_account = false
    WHERE username = :username AND counts_for_account AND id IS DISTINCT FROM :attempt_id
      AND EXISTS (SELECT 1 FROM live)
), remembered AS (
    INSERT INTO known_addresses (user_id, address_digest, last_login_at)
    SELECT id, CAST(:digest AS varchar), CAST(:now AS timestamptz) FROM live WHERE :remember
    ON CONFLICT (user_id, address_digest) DO UPDATE SET last_login_at = excluded.last_login_at
), session AS (
    INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at, user_agent,
        ip_address)
    SELECT CAST(:session_id AS uuid), id, CAST(:now AS timestamptz),
        CAST(:session_expires_at AS timestamptz), CAST(:now AS timestamptz),
        CAST(:user_agent AS varchar), CAST(:ip_address AS varchar)
    FROM live
    RETURNING id
), token AS (
    INSERT INTO refresh_tokens (id, session_id, token_hash, parent_id, issued_at, expires_at)
    SELECT CAST(:token_id AS uuid), id, CAST(:token_hash AS varchar), NULL,
        CAST(:now AS timestamptz), CAST(:token_expires_at AS timestamptz)
    FROM session
), audit AS (
    INSERT INTO audit_events
        (occurred_at, event, user_id, username, session_id, ip_address, user_agent, detail)
    SELECT CAST(:audit_occurred_at AS timestamptz),
        CASE WHEN session.id IS NULL THEN CAST(:disabled_event AS varchar)
             ELSE CAST(:audit_event AS varchar) END,
        CAST(:user_id AS uuid), CAST(:audit_username AS varchar), session.id,
        CAST(:audit_ip_address AS varchar), CAST(:audit_user_agent AS varchar),
        CAST(:audit_detail AS varchar)
    FROM (SELECT 1) AS one LEFT JOIN session ON true
)
SELECT EXISTS (SELECT 1 FROM session)"""
_FINISH = DriverStatement(_LOCK + _FINISH_REST)
_FINISH_REHASHED = DriverStatement(_LOCK_REHASHED + _FINISH_REST)
