from __future__ import annotations

import asyncio

from alembic import command
from alembic.util.exc import CommandError

from authsvc.config import Settings
from authsvc.migrations import alembic_config, upgrade_to_head


async def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    config = alembic_config(Settings(database_url=database_url, _env_file=None))  # type: ignore[call-arg]
    try:
        await asyncio.to_thread(command.check, config)
    except CommandError as exc:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"alembic check found drift: {exc}") from None


async def test_upgrade_is_idempotent(database_url: str) -> None:
    settings = Settings(database_url=database_url, _env_file=None)  # type: ignore[call-arg]
    await asyncio.to_thread(upgrade_to_head, settings)
    await asyncio.to_thread(upgrade_to_head, settings)
