"""The purge service against the real databases: batches, and instances purging at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.db import make_engine, make_sessionmaker
from authsvc.models import AuthSession, RefreshToken, User
from authsvc.services.purge import purge


async def _seed(engine: AsyncEngine, *, capped: int, live: int) -> None:
    now = datetime.now(UTC)
    user_id = uuid.uuid4()
    sessions, tokens = [], []
    for i in range(capped + live):
        sid = uuid.uuid4()
        cap = now - timedelta(minutes=1) if i < capped else now + timedelta(hours=1)
        sessions.append(
            {
                "id": sid,
                "user_id": user_id,
                "created_at": now - timedelta(hours=13),
                "expires_at": cap,
                "last_used_at": now - timedelta(hours=2),
            }
        )
        for n in range(2):
            tokens.append(
                {
                    "id": uuid.uuid4(),
                    "session_id": sid,
                    "token_hash": uuid.uuid4().hex + uuid.uuid4().hex,
                    "issued_at": now - timedelta(hours=2),
                    "expires_at": min(cap, now + timedelta(minutes=n)),
                }
            )
    async with engine.begin() as conn:
        await conn.execute(
            User.__table__.insert(),
            [
                {
                    "id": user_id,
                    "username": f"purge{user_id.hex[:8]}",
                    "password_hash": "x",
                    "created_at": now,
                }
            ],
        )
        await conn.execute(AuthSession.__table__.insert(), sessions)
        await conn.execute(RefreshToken.__table__.insert(), tokens)


async def test_concurrent_purges_share_the_work_in_batches(
    make_settings: Callable[..., Settings], clean_db: AsyncEngine
) -> None:
    await _seed(clean_db, capped=45, live=5)
    settings = make_settings(purge_batch_size=7)
    engines = [make_engine(settings) for _ in range(3)]
    try:
        now = datetime.now(UTC)
        results = await asyncio.gather(
            *(purge(make_sessionmaker(e), settings, now) for e in engines)
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(r.sessions for r in results) == 45
    async with clean_db.connect() as conn:
        sessions = (await conn.execute(select(func.count()).select_from(AuthSession))).scalar_one()
        tokens = (await conn.execute(select(func.count()).select_from(RefreshToken))).scalar_one()
    assert sessions == 5
    assert tokens == 10
