"""SQLite's transactions as the service uses them: reads never hold the write lock, and a
request that authenticates and then writes never upgrades a stale read snapshot."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.db import make_sessionmaker
from authsvc.main import build_hasher
from authsvc.models import AuditEvent
from authsvc.security.keys import load_signing_key
from authsvc.security.tokens import TokenCodec
from authsvc.services.auth import AuthService, ClientInfo
from authsvc.services.sessions import SessionService
from tests.conftest import ONLY_SQLITE, PASSWORD, unique_username


@ONLY_SQLITE
async def test_authenticate_then_write_survives_a_concurrent_commit(
    settings: Settings, clean_db: AsyncEngine
) -> None:
    codec = TokenCodec(settings, load_signing_key(settings))
    hasher = build_hasher(settings)
    sessionmaker = make_sessionmaker(clean_db)
    now = datetime.now(UTC)
    async with sessionmaker() as db:
        auth = AuthService(db, settings=settings, hasher=hasher, codec=codec)
        name = unique_username()
        await auth.create_user(username=name, password=PASSWORD, now=now)
        tokens = await auth.login(username=name, password=PASSWORD, client=ClientInfo(), now=now)

    async with sessionmaker() as db:  # one request: the bearer check, then a write
        auth = AuthService(db, settings=settings, hasher=hasher, codec=codec)
        user = await auth.authenticate(codec.decode_access_token(tokens.access_token), now)
        # Another connection commits in between (another request, or another worker).
        async with clean_db.begin() as other:
            await other.execute(insert(AuditEvent).values(occurred_at=now, event="test"))
        sessions = SessionService(db, settings=settings, codec=codec)
        revoked = await sessions.logout_all(user_id=user.id, client=ClientInfo(), now=now)
    assert revoked == 1
    assert user.username == name  # still loaded after the read transaction ended
