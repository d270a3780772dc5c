"""A login whose account is disabled while its password is being hashed starts no session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.db import make_sessionmaker
from authsvc.errors import AccountDisabled
from authsvc.models import AuthSession
from authsvc.security.keys import load_signing_key
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import TokenCodec
from authsvc.services.auth import AuthService, ClientInfo
from authsvc.services.users import UserAdminService
from tests.conftest import FAST_HASH, PASSWORD, unique_username


class DisablingHasher(PasswordHasher):
    """Verifies, and meanwhile (as another process would) disables the account."""

    def __init__(self, engine: AsyncEngine, username: str) -> None:
        super().__init__(
            memory_cost=FAST_HASH["argon2_memory_cost"], time_cost=FAST_HASH["argon2_time_cost"]
        )
        self._sessionmaker = make_sessionmaker(engine)
        self._username = username

    async def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        result = await super().verify_and_update(password, password_hash)
        async with self._sessionmaker() as other:
            await UserAdminService(other).disable(self._username, datetime.now(UTC))
        return result


async def test_disable_during_hashing_refuses_the_login(
    settings: Settings, clean_db: AsyncEngine
) -> None:
    codec = TokenCodec(settings, load_signing_key(settings))
    sessionmaker = make_sessionmaker(clean_db)
    name = unique_username()
    now = datetime.now(UTC)
    async with sessionmaker() as db:
        plain = PasswordHasher(memory_cost=1024, time_cost=1)
        await AuthService(db, settings=settings, hasher=plain, codec=codec).create_user(
            username=name, password=PASSWORD, now=now
        )
    async with sessionmaker() as db:
        service = AuthService(
            db, settings=settings, hasher=DisablingHasher(clean_db, name), codec=codec
        )
        with pytest.raises(AccountDisabled):
            await service.login(username=name, password=PASSWORD, client=ClientInfo(), now=now)
    async with clean_db.connect() as conn:
        sessions = (await conn.execute(select(func.count()).select_from(AuthSession))).scalar()
    assert sessions == 0
