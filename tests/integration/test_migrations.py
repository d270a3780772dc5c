"""The migrations build exactly the schema the models describe, and undo it, on each backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.db import Base, make_engine
from authsvc.migrations import alembic_config, upgrade_to_head


def settings_for(database_url: str) -> Settings:
    # As the Kubernetes init container runs `authsvc migrate` (docs/deployment.md): catalog
    # reads and DDL get minutes, not a request's 2 s, which a loaded CI host has exceeded.
    return Settings(database_url=database_url, db_statement_timeout_seconds=300.0, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def inspection_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's (migrated) database with the migration timeouts."""
    engine = make_engine(settings_for(database_url))
    yield engine
    await engine.dispose()


def schema_state(conn: Connection) -> tuple[list[Any], set[str], str | None]:
    """What autogenerate would change to reach the models, the tables, and the revision."""
    context = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "render_as_batch": conn.dialect.name == "sqlite"},
    )
    tables = set(inspect(conn).get_table_names())
    return compare_metadata(context, Base.metadata), tables, context.get_current_revision()


async def state(engine: AsyncEngine) -> tuple[list[Any], set[str], str | None]:
    async with engine.connect() as conn:
        return await conn.run_sync(schema_state)


def head(database_url: str) -> str:
    revision = ScriptDirectory.from_config(
        alembic_config(settings_for(database_url))
    ).get_current_head()
    assert revision is not None
    return revision


async def test_the_schema_after_upgrade_is_the_models(
    database_url: str, inspection_engine: AsyncEngine
) -> None:
    diff, tables, revision = await state(inspection_engine)
    assert diff == [], f"the migrations and the models differ: {diff}"
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert revision == head(database_url)


async def test_downgrade_to_nothing_and_upgrade_again_round_trips(
    database_url: str, inspection_engine: AsyncEngine
) -> None:
    config = alembic_config(settings_for(database_url))
    try:
        await asyncio.to_thread(command.downgrade, config, "base")
        _, tables, revision = await state(inspection_engine)
        assert tables <= {"alembic_version"}, f"left behind by the downgrades: {tables}"
        assert revision is None
        # One revision at a time, as deployments met them.
        revisions = [
            rev.revision
            for rev in reversed(list(ScriptDirectory.from_config(config).walk_revisions()))
        ]
        for expected in revisions:
            await asyncio.to_thread(command.upgrade, config, "+1")
            assert (await state(inspection_engine))[2] == expected
    finally:
        await asyncio.to_thread(upgrade_to_head, settings_for(database_url))
        # Pooled connections may hold plans for the dropped tables (asyncpg caches them).
        await inspection_engine.dispose()
    diff, tables, revision = await state(inspection_engine)
    assert diff == [], f"after the round trip the schema differs from the models: {diff}"
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert revision == head(database_url)


async def test_alembic_check_finds_nothing_to_generate(database_url: str) -> None:
    # What CI's `alembic check` runs, from the service's own configuration.
    await asyncio.to_thread(command.check, alembic_config(settings_for(database_url)))


async def test_upgrade_at_head_changes_nothing(
    database_url: str, inspection_engine: AsyncEngine
) -> None:
    before = await state(inspection_engine)
    await asyncio.to_thread(upgrade_to_head, settings_for(database_url))
    assert await state(inspection_engine) == before
