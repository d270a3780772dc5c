"""The login on PostgreSQL: three statements through the driver (repositories.login), in
autocommit, with the outcomes, rows and events of the general path (SQLite's)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.errors import AccountDisabled, InvalidCredentials, TooManyAttempts
from authsvc.models import (
    AuditEvent,
    AuthSession,
    KnownAddress,
    LoginFailure,
    RefreshToken,
    User,
)
from authsvc.security.passwords import PasswordHasher
from authsvc.services.auth import ClientInfo, IssuedTokens
from authsvc.services.events import AuthEvent, EventType
from authsvc.services.throttle import DatabaseThrottle, ThrottleLimits
from authsvc.services.users import UserAdminService
from tests.conftest import ONLY_POSTGRESQL, PASSWORD, unique_username
from tests.integration.test_rotation_race import Harness
from tests.integration.test_rotation_statement import Statements

pytestmark = ONLY_POSTGRESQL

CLIENT = ClientInfo(ip_address="198.51.100.21", user_agent="login-statements")


class Recorder:
    def __init__(self) -> None:
        self.events: list[AuthEvent] = []

    async def record(self, event: AuthEvent) -> None:
        self.events.append(event)


async def _user(h: Harness, hasher: PasswordHasher | None = None) -> tuple[str, uuid.UUID]:
    name = unique_username("stmt")
    async with h.sessionmaker() as db:
        service = h.service(db)
        if hasher is not None:
            service._hasher = hasher
        user = await service.create_user(username=name, password=PASSWORD, now=datetime.now(UTC))
    return name, user.id


async def _login(
    h: Harness, name: str, password: str = PASSWORD, events: Recorder | None = None
) -> IssuedTokens:
    async with h.sessionmaker() as db:
        return await h.service(db, events).login(
            username=name, password=password, client=CLIENT, now=datetime.now(UTC)
        )


async def _scalar(engine: AsyncEngine, query: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar()


async def _audit(engine: AsyncEngine, user_id: uuid.UUID) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AuditEvent.event, AuditEvent.session_id, AuditEvent.username)
            .where(AuditEvent.user_id == user_id)
            .order_by(AuditEvent.id)
        )
        return [tuple(row) for row in rows.all()]


async def _attempts(engine: AsyncEngine, name: str) -> int:
    return int(
        await _scalar(
            engine,
            select(func.count()).select_from(LoginFailure).where(LoginFailure.username == name),
        )
    )


async def test_a_login_is_three_statements_and_writes_what_the_general_path_does(
    pg: Callable[..., Harness],
) -> None:
    h = pg()
    name, user_id = await _user(h)
    events = Recorder()
    statements = Statements(h.engine)
    tokens = await _login(h, name, events=events)
    # The read with the attempt's row, the count, the write: no BEGIN, COMMIT or ROLLBACK.
    assert len(statements.seen) == 3, statements.seen
    assert statements.seen[0].lstrip().startswith("WITH found AS")
    assert statements.seen[1].lstrip().startswith("WITH checked AS")
    assert statements.seen[2].lstrip().startswith("WITH live AS")
    assert tokens.user_id == user_id
    async with h.engine.connect() as conn:
        session = (
            await conn.execute(select(AuthSession).where(AuthSession.id == tokens.session_id))
        ).one()
        chain = (
            await conn.execute(
                select(RefreshToken.parent_id, RefreshToken.consumed_at).where(
                    RefreshToken.session_id == tokens.session_id
                )
            )
        ).all()
    assert session.user_id == user_id and session.revoked_at is None
    assert (session.ip_address, session.user_agent) == (CLIENT.ip_address, CLIENT.user_agent)
    assert [tuple(row) for row in chain] == [(None, None)]
    assert await _audit(h.engine, user_id) == [
        ("user_registered", None, name),
        ("login_succeeded", tokens.session_id, name),
    ]
    # The attempt was given back; the address is known now.
    assert await _attempts(h.engine, name) == 0
    known = select(func.count()).select_from(KnownAddress).where(KnownAddress.user_id == user_id)
    assert await _scalar(h.engine, known) == 1
    assert [(e.type, e.session_id) for e in events.events] == [
        (EventType.LOGIN_SUCCEEDED, tokens.session_id)
    ]
    # The tokens work: the session refreshes.
    async with h.sessionmaker() as db:
        await h.service(db).refresh(
            refresh_token=tokens.refresh_token, client=CLIENT, now=datetime.now(UTC)
        )
    # From the known address again: three statements, one known-address row refreshed.
    statements.seen.clear()
    await _login(h, name)
    assert len(statements.seen) == 3, statements.seen
    assert await _scalar(h.engine, known) == 1


async def test_only_the_attempts_commit_skips_the_flush_and_the_connection_keeps_flushing(
    pg: Callable[..., Harness],
) -> None:
    """The first statement commits the attempt's row without waiting for the WAL flush
    (``synchronous_commit`` off for that statement); the login's own change, and whatever
    the pooled connection runs next, wait for it as always."""
    # One pooled connection: the login's three statements and the check below share it.
    h = pg(db_pool_size=1, db_max_overflow=0)
    name, _ = await _user(h)
    statements = Statements(h.engine)
    await _login(h, name)
    relaxed = [s for s in statements.seen if "synchronous_commit" in s]
    assert len(relaxed) == 1 and relaxed[0] is statements.seen[0]
    async with h.engine.connect() as conn:
        setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
    assert setting == "on"


async def test_a_success_ends_the_accounts_run_of_failures(pg: Callable[..., Harness]) -> None:
    h = pg()
    name, _ = await _user(h)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await _login(h, name, password="wrong password entirely")
    assert await _attempts(h.engine, name) == 2
    await _login(h, name)
    # The failures stay counted in the address windows, not in the account's.
    counting = (
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.username == name, LoginFailure.counts_for_account.is_(True))
    )
    assert await _attempts(h.engine, name) == 2
    assert await _scalar(h.engine, counting) == 0


async def test_a_disabled_account_gets_no_session_and_gives_its_attempt_back(
    pg: Callable[..., Harness],
) -> None:
    h = pg()
    name, user_id = await _user(h)
    async with h.sessionmaker() as db:
        await UserAdminService(db).disable(name, datetime.now(UTC))
    events = Recorder()
    statements = Statements(h.engine)
    with pytest.raises(AccountDisabled):
        await _login(h, name, events=events)
    assert len(statements.seen) == 3, statements.seen
    sessions = select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user_id)
    assert await _scalar(h.engine, sessions) == 0
    assert await _attempts(h.engine, name) == 0
    known = select(func.count()).select_from(KnownAddress).where(KnownAddress.user_id == user_id)
    assert await _scalar(h.engine, known) == 0
    assert (await _audit(h.engine, user_id))[-1] == ("login_disabled", None, name)
    assert [(e.type, e.user_id) for e in events.events] == [(EventType.LOGIN_DISABLED, user_id)]


async def test_a_hash_with_old_parameters_is_replaced_in_the_same_statement(
    pg: Callable[..., Harness],
) -> None:
    h = pg()
    # Stored under other argon2 parameters than the service's (FAST_HASH: time_cost 1).
    name, user_id = await _user(h, PasswordHasher(memory_cost=1024, time_cost=2))
    stored = select(User.password_hash).where(User.id == user_id)
    before = await _scalar(h.engine, stored)
    assert "t=2" in before
    statements = Statements(h.engine)
    await _login(h, name)
    assert len(statements.seen) == 3, statements.seen
    assert statements.seen[2].lstrip().startswith("WITH live AS (\n    UPDATE users")
    after = await _scalar(h.engine, stored)
    assert after != before and "t=1" in after
    await _login(h, name)  # the new hash verifies, and needs no rehash
    assert await _scalar(h.engine, stored) == after


async def test_a_wrong_password_keeps_its_attempt_and_a_full_window_writes_nothing(
    pg: Callable[..., Harness],
) -> None:
    h = pg(login_max_attempts=2)
    name, user_id = await _user(h)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await _login(h, name, password="wrong password entirely")
    assert await _attempts(h.engine, name) == 2
    statements = Statements(h.engine)
    with pytest.raises(TooManyAttempts):
        await _login(h, name)
    # The first statement found the pair's window full: no attempt counted, only the
    # throttled event reported (in a unit of its own).
    assert any(s.lstrip().startswith("WITH found AS") for s in statements.seen)
    assert not any(s.lstrip().startswith("WITH checked AS") for s in statements.seen)
    assert await _attempts(h.engine, name) == 2
    assert [row[0] for row in await _audit(h.engine, user_id)][-1] == "login_throttled"


async def test_the_count_refuses_over_the_limit_and_deletes_the_attempt(
    pg: Callable[..., Harness],
) -> None:
    h = pg(login_max_attempts=2)
    name, address = unique_username("count"), "192.0.2.55"
    now = datetime.now(UTC)
    async with h.engine.begin() as conn:
        # Two attempts committed by others meanwhile, then this one's own.
        for seconds in (2, 1):
            await conn.execute(
                insert(LoginFailure).values(
                    username=name, ip_address=address, attempted_at=now - timedelta(seconds=seconds)
                )
            )
        own = (
            await conn.execute(
                insert(LoginFailure)
                .values(username=name, ip_address=address, attempted_at=now)
                .returning(LoginFailure.id)
            )
        ).scalar_one()
    async with h.sessionmaker() as db:
        throttle = DatabaseThrottle(db, ThrottleLimits.from_settings(h.settings))
        with pytest.raises(TooManyAttempts) as refused:
            await throttle.admit_counted_login(name, address, now, own, check_account=True)
    assert refused.value.retry_after >= 1
    assert await _attempts(h.engine, name) == 2  # its own row went, the others stay
    async with h.sessionmaker() as db:
        throttle = DatabaseThrottle(db, ThrottleLimits.from_settings(h.settings))
        async with h.engine.begin() as conn:
            own = (
                await conn.execute(
                    insert(LoginFailure)
                    .values(username=unique_username("other"), ip_address=address, attempted_at=now)
                    .returning(LoginFailure.id)
                )
            ).scalar_one()
        # Another username from the address: the pair's window has room, the address's too.
        other = await _scalar(h.engine, select(LoginFailure.username).where(LoginFailure.id == own))
        ticket = await throttle.admit_counted_login(other, address, now, own, check_account=True)
    assert ticket.ref == own
