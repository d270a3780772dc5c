"""db.driver_connection on PostgreSQL: a statement cut off half way never leaves its
connection to the next request, and a connection failure is the API's 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from authsvc.api.errors import is_database_unavailable
from authsvc.config import Settings
from authsvc.db import driver_connection, make_engine
from tests.conftest import ONLY_POSTGRESQL

pytestmark = ONLY_POSTGRESQL


async def test_a_cancelled_statement_does_not_poison_the_pool(
    backend: str, make_settings: Callable[..., Settings]
) -> None:
    # One connection: whatever the cancelled statement left behind, the next one gets.
    engine = make_engine(make_settings(db_pool_size=1, db_max_overflow=0))
    try:

        async def slow() -> None:
            async with driver_connection(engine) as connection:
                await connection.fetchval("SELECT pg_sleep(2)")

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.2)  # the statement is on the wire
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(3):
            async with driver_connection(engine) as connection:
                assert await connection.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()


async def test_a_connection_that_fails_under_a_statement_is_a_503(
    backend: str, make_settings: Callable[..., Settings]
) -> None:
    engine = make_engine(make_settings(db_pool_size=1, db_max_overflow=0))
    try:
        with pytest.raises(Exception) as caught:
            async with driver_connection(engine) as connection:
                # The server ends this very connection, as a restart or a failover would.
                await connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        assert is_database_unavailable(caught.value)
        async with driver_connection(engine) as connection:  # a fresh one replaces it
            assert await connection.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()
