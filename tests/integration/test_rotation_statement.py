"""The rotation on PostgreSQL: one statement (SessionRepository.rotate), all or nothing, and
the same successor as the general path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuditEvent, AuthSession, RefreshToken
from authsvc.repositories.sessions import SessionRepository
from authsvc.security.tokens import token_hash
from tests.conftest import ONLY_POSTGRESQL
from tests.integration.test_rotation_race import Harness

# The one-statement rotation is PostgreSQL's (SQLite takes the general path).
pytestmark = ONLY_POSTGRESQL


class Statements:
    """The statements sent on ``engine``'s connections: through SQLAlchemy, and through
    the driver directly (``db.driver_connection``; asyncpg's query logger), each once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seen: list[str] = []
        self._watched: set[int] = set()
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)
        event.listen(engine.sync_engine, "checkout", self._watch)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement)

    def _watch(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in self._watched:
            self._watched.add(id(driver))
            driver.add_query_logger(lambda logged: self.seen.append(logged.query))


async def _chain(engine: AsyncEngine, session_id: uuid.UUID) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(RefreshToken.token_hash, RefreshToken.parent_id, RefreshToken.consumed_at)
            .where(RefreshToken.session_id == session_id)
            .order_by(RefreshToken.issued_at)
        )
        return list(rows.all())


async def test_a_rotation_is_one_statement_and_the_successor_rotates_again(
    pg: Callable[..., Harness],
) -> None:
    h = pg(refresh_reuse_grace_seconds=0)
    tokens = await h.login()
    statements = Statements(h.engine)
    successor = await h.refresh(tokens.refresh_token)
    # Neither BEGIN nor COMMIT: one statement (the pool's checkout check may add none).
    assert len(statements.seen) == 1, statements.seen
    assert statements.seen[0].lstrip().startswith("WITH live AS")
    chain = await _chain(h.engine, tokens.session_id)
    assert [row.token_hash for row in chain] == [
        token_hash(tokens.refresh_token),
        token_hash(successor.refresh_token),
    ]
    assert chain[0].consumed_at is not None and chain[1].consumed_at is None
    third = await h.refresh(successor.refresh_token)
    assert third.refresh_token != successor.refresh_token
    assert len(await _chain(h.engine, tokens.session_id)) == 3


async def test_the_successor_is_the_one_the_grace_window_replays(
    pg: Callable[..., Harness],
) -> None:
    h = pg(refresh_reuse_grace_seconds=30)
    tokens = await h.login()
    successor = await h.refresh(tokens.refresh_token)  # one statement
    replayed = await h.refresh(tokens.refresh_token)  # general path: derived again
    assert replayed.refresh_token == successor.refresh_token


async def test_near_its_cap_the_session_takes_the_general_path(
    pg: Callable[..., Harness],
) -> None:
    h = pg(refresh_reuse_grace_seconds=0, refresh_token_ttl_seconds=3600)
    tokens = await h.login()
    cap = datetime.now(UTC) + timedelta(seconds=600)  # sooner than now + the token TTL
    async with h.engine.begin() as conn:
        await conn.execute(
            update(AuthSession).where(AuthSession.id == tokens.session_id).values(expires_at=cap)
        )
    statements = Statements(h.engine)
    successor = await h.refresh(tokens.refresh_token)
    assert len(statements.seen) > 1  # the one statement changed nothing; the general path ran
    # The successor ends at the cap, as the general path issues it.
    assert successor.refresh_expires_in <= 600
    assert len(await _chain(h.engine, tokens.session_id)) == 2


async def test_nothing_changes_when_the_session_is_revoked_or_the_token_spent(
    pg: Callable[..., Harness],
) -> None:
    h = pg(refresh_reuse_grace_seconds=0)
    tokens = await h.login()
    now = datetime.now(UTC)
    presented = token_hash(tokens.refresh_token)

    async def rotate(**overrides: Any) -> bool:
        async with h.sessionmaker() as db:
            args: dict[str, Any] = {
                "token_hash": presented,
                "session_id": tokens.session_id,
                "user_id": tokens.user_id,
                "now": now,
                "ip_address": "198.51.100.9",
                "successor_hash": "f" * 64,
                "successor_expires_at": now + timedelta(seconds=60),
                **overrides,
            }
            return await SessionRepository(db).rotate(**args)

    before = await _chain(h.engine, tokens.session_id)
    # Another user's id, another session's id, or an already past cap: nothing happens.
    assert not await rotate(user_id=uuid.uuid4())
    assert not await rotate(session_id=uuid.uuid4())
    assert not await rotate(successor_expires_at=now + timedelta(days=3650))
    async with h.engine.begin() as conn:
        await conn.execute(
            update(AuthSession)
            .where(AuthSession.id == tokens.session_id)
            .values(revoked_at=now, revoked_reason="test")
        )
    assert not await rotate()
    assert await _chain(h.engine, tokens.session_id) == before
    async with h.engine.connect() as conn:
        ip = (
            await conn.execute(
                select(AuthSession.ip_address).where(AuthSession.id == tokens.session_id)
            )
        ).scalar_one()
    assert ip != "198.51.100.9"  # not touched either


async def test_with_an_audit_row_the_rotation_writes_it_in_the_same_statement(
    pg: Callable[..., Harness],
) -> None:
    h = pg(refresh_reuse_grace_seconds=0)
    tokens = await h.login()
    now = datetime.now(UTC)
    row = AuditEvent(
        occurred_at=now,
        event="refresh_rotated",
        user_id=tokens.user_id,
        username=None,
        session_id=tokens.session_id,
        ip_address="198.51.100.10",
        user_agent="audit-test",
        detail=None,
    )
    statements = Statements(h.engine)
    async with h.sessionmaker() as db:
        done = await SessionRepository(db).rotate(
            token_hash=token_hash(tokens.refresh_token),
            session_id=tokens.session_id,
            user_id=tokens.user_id,
            now=now,
            ip_address="198.51.100.10",
            successor_hash="e" * 64,
            successor_expires_at=now + timedelta(seconds=60),
            audit=row,
        )
    assert done
    assert len(statements.seen) == 1
    async with h.engine.connect() as conn:
        audited = (
            await conn.execute(
                select(AuditEvent.event, AuditEvent.user_agent, AuditEvent.ip_address).where(
                    AuditEvent.session_id == tokens.session_id,
                    AuditEvent.event == "refresh_rotated",
                )
            )
        ).all()
    assert [tuple(a) for a in audited] == [("refresh_rotated", "audit-test", "198.51.100.10")]
