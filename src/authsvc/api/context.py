"""What the lifespan builds and every request shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from authsvc.config import Settings
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import TokenCodec
from authsvc.services.events import EventSink, NullSink
from authsvc.services.throttle import Throttle


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    codec: TokenCodec
    events: EventSink = field(default_factory=NullSink)
    # Shared by all requests (Redis); None: each request counts in the database.
    throttle: Throttle | None = None
