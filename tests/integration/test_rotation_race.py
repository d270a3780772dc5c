"""Rotation under real concurrency: N service instances, each on its own pooled connection,
present one refresh token at the same moment (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.db import make_engine, make_sessionmaker
from authsvc.errors import RefreshTokenReused, RefreshTokenRevoked
from authsvc.main import build_hasher
from authsvc.models import AuthSession, RefreshToken
from authsvc.security.keys import load_signing_key
from authsvc.security.tokens import TokenCodec
from authsvc.services.auth import AuthService, ClientInfo, IssuedTokens
from authsvc.services.events import AuthEvent, EventSink, EventType
from tests.conftest import PASSWORD, unique_username

N = 20
CLIENT = ClientInfo(ip_address="203.0.113.7", user_agent="race-test")


class PeakCheckouts:
    """Counts how many pooled connections were checked out at once (proof of real concurrency)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.current = 0
        self.peak = 0
        event.listen(engine.sync_engine, "checkout", self._out)
        event.listen(engine.sync_engine, "checkin", self._in)

    def _out(self, *_: Any) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def _in(self, *_: Any) -> None:
        self.current -= 1


class Harness:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.sessionmaker = make_sessionmaker(engine)
        self.hasher = build_hasher(settings)
        self.codec = TokenCodec(settings, load_signing_key(settings))

    def service(self, session: Any, events: EventSink | None = None) -> AuthService:
        return AuthService(
            session, settings=self.settings, hasher=self.hasher, codec=self.codec, events=events
        )

    async def login(self) -> IssuedTokens:
        username = unique_username("race")
        now = datetime.now(UTC)
        async with self.sessionmaker() as session:
            await self.service(session).create_user(username=username, password=PASSWORD, now=now)
        async with self.sessionmaker() as session:
            return await self.service(session).login(
                username=username, password=PASSWORD, client=CLIENT, now=now
            )

    async def refresh(self, token: str, events: EventSink | None = None) -> IssuedTokens:
        async with self.sessionmaker() as session:
            return await self.service(session, events).refresh(
                refresh_token=token, client=CLIENT, now=datetime.now(UTC)
            )

    async def warm_pool(self, n: int) -> None:
        """Open ``n`` connections at once so the race does not wait on connects."""
        conns = [await self.engine.connect() for _ in range(n)]
        for conn in conns:
            await conn.close()


@pytest.fixture
async def harness(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Harness]]:
    engines: list[AsyncEngine] = []

    def factory(**overrides: Any) -> Harness:
        settings = make_settings(**overrides)
        # Its own pool, big enough that every racer holds a real connection of its own.
        engine = make_engine(settings, pool_size=N + 2, max_overflow=0, pool_timeout=30)
        engines.append(engine)
        return Harness(settings, engine)

    yield factory
    for engine in engines:
        await engine.dispose()


async def _session_state(engine: AsyncEngine, session_id: uuid.UUID) -> tuple[Any, int, int]:
    """(revoked_at, tokens in the chain, successors) read on a connection of ``engine``."""
    async with engine.connect() as conn:
        revoked_at = (
            await conn.execute(select(AuthSession.revoked_at).where(AuthSession.id == session_id))
        ).scalar_one()
        total = (
            await conn.execute(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.session_id == session_id)
            )
        ).scalar_one()
        successors = (
            await conn.execute(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.session_id == session_id, RefreshToken.parent_id.is_not(None))
            )
        ).scalar_one()
    return revoked_at, total, successors


async def _race(h: Harness, token: str) -> tuple[list[IssuedTokens], list[BaseException], int]:
    await h.warm_pool(N)
    peak = PeakCheckouts(h.engine)
    results = await asyncio.gather(*(h.refresh(token) for _ in range(N)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, IssuedTokens)]
    errors = [r for r in results if isinstance(r, BaseException)]
    return ok, errors, peak.peak


def _assert_concurrent(h: Harness, peak: int) -> None:
    """On PostgreSQL the racers held connections at once. On SQLite the writers of a process
    take turns (one connection at a time, the others queue without one); racing processes
    are tests/e2e/test_concurrency.py."""
    if h.engine.dialect.name == "sqlite":
        assert peak == 1, f"{peak} SQLite writers of one process held connections at once"
    else:
        assert peak >= N // 2, f"only {peak} racers held connections at the same time"


async def test_concurrent_refresh_of_one_token_has_exactly_one_winner(
    harness: Callable[..., Harness],
) -> None:
    h = harness(refresh_reuse_grace_seconds=0)
    tokens = await h.login()

    ok, errors, peak = await _race(h, tokens.refresh_token)

    _assert_concurrent(h, peak)
    assert len(ok) == 1, f"{len(ok)} winners; errors: {[type(e).__name__ for e in errors]}"
    assert len(errors) == N - 1
    assert all(isinstance(e, RefreshTokenReused) for e in errors), [repr(e) for e in errors]
    # The losers' reuse detection revoked the session, the winner's new token included.
    revoked_at, total, successors = await _session_state(h.engine, tokens.session_id)
    assert revoked_at is not None
    assert successors == 1
    assert total == 2


async def test_concurrent_refresh_within_grace_converges_on_one_successor(
    harness: Callable[..., Harness],
) -> None:
    h = harness(refresh_reuse_grace_seconds=30)
    tokens = await h.login()

    ok, errors, peak = await _race(h, tokens.refresh_token)

    _assert_concurrent(h, peak)
    assert errors == [], [repr(e) for e in errors]
    assert len(ok) == N
    assert len({t.refresh_token for t in ok}) == 1
    assert {t.session_id for t in ok} == {tokens.session_id}
    revoked_at, total, successors = await _session_state(h.engine, tokens.session_id)
    assert revoked_at is None
    assert successors == 1
    assert total == 2
    # The shared successor is the live head of the chain: it rotates once more.
    successor = await h.refresh(ok[0].refresh_token)
    assert successor.refresh_token != ok[0].refresh_token


class RevocationProbe:
    """An event sink that looks, from a separate connection, at the session when reuse is
    reported: services report an event after its change is committed and before they raise."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.seen_revoked_at: list[Any] = []

    async def record(self, event: AuthEvent) -> None:
        if event.type is EventType.REFRESH_REUSED:
            assert event.session_id is not None
            revoked_at, _, _ = await _session_state(self.engine, event.session_id)
            self.seen_revoked_at.append(revoked_at)


async def test_reuse_revocation_is_committed_before_the_error(
    harness: Callable[..., Harness], settings: Settings
) -> None:
    h = harness(refresh_reuse_grace_seconds=0)
    tokens = await h.login()
    successor = await h.refresh(tokens.refresh_token)
    # Another engine: another pool, so nothing the service's connection holds is visible to it.
    observer = make_engine(settings)
    try:
        probe = RevocationProbe(observer)
        with pytest.raises(RefreshTokenReused):
            await h.refresh(tokens.refresh_token, events=probe)
        assert len(probe.seen_revoked_at) == 1
        assert probe.seen_revoked_at[0] is not None
        revoked_at, _, _ = await _session_state(observer, tokens.session_id)
        assert revoked_at is not None
    finally:
        await observer.dispose()
    # The newest token of the chain went down with the session.
    with pytest.raises(RefreshTokenRevoked):
        await h.refresh(successor.refresh_token)
