"""The pool's checkout check (db.install_checkout_check): connections the server closed are
replaced before use, and idle ones are pinged, without a round trip on a busy pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from authsvc import db
from authsvc.config import Settings
from authsvc.db import make_engine
from tests.conftest import ONLY_POSTGRESQL

# The checkout check is PostgreSQL's (SQLite's connections are files, never closed by a server).
pytestmark = ONLY_POSTGRESQL


@pytest.fixture
def pg_settings(backend: str, make_settings: Callable[..., Settings]) -> Settings:
    assert backend == "postgresql"
    return make_settings()


async def _backend_pid(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_the_server_closed_is_replaced_before_use(
    pg_settings: Settings,
) -> None:
    engine = make_engine(pg_settings, pool_size=1, max_overflow=0)
    killer = make_engine(pg_settings, pool_size=1, max_overflow=0)
    try:
        first = await _backend_pid(engine)
        async with killer.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await asyncio.sleep(0.5)  # asyncpg reads the server's goodbye
        # The pooled connection is dead; the request still gets a working one.
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()
        await killer.dispose()


async def test_only_connections_idle_past_the_threshold_are_pinged(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_settings, pool_size=1, max_overflow=0)
    pings: list[str] = []
    try:
        await _backend_pid(engine)  # connected: fresh, no ping

        real_execute = None

        def spy(driver: Any) -> None:
            nonlocal real_execute
            real_execute = driver.execute

            async def execute(query: str, *args: Any, **kwargs: Any) -> Any:
                if query == ";":
                    pings.append(query)
                assert real_execute is not None
                return await real_execute(query, *args, **kwargs)

            driver.execute = execute

        async with engine.connect() as conn:
            spy((await conn.get_raw_connection()).driver_connection)
        for _ in range(5):  # busy: back within the threshold every time
            await _backend_pid(engine)
        assert pings == []
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.2)
        await asyncio.sleep(0.4)
        await _backend_pid(engine)
        assert pings == [";"]
    finally:
        await engine.dispose()
