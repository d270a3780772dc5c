"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.db import make_engine
from tests.integration.test_rotation_race import Harness


@pytest.fixture
async def pg(
    backend: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Harness]]:
    """Harnesses on engines of their own, with settings overridden (PostgreSQL tests)."""
    assert backend == "postgresql"
    engines: list[AsyncEngine] = []

    def factory(**overrides: Any) -> Harness:
        settings = make_settings(**overrides)
        engine = make_engine(settings)
        engines.append(engine)
        return Harness(settings, engine)

    yield factory
    for engine in engines:
        await engine.dispose()
