"""What the lifespan builds and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from authsvc.config import Settings
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import TokenCodec


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    codec: TokenCodec
