"""Running Alembic from the service (``authsvc migrate``, ``authsvc serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from authsvc.config import Settings

_PACKAGE = Path(__file__).resolve().parent


def _script_location() -> Path:
    # Installed from a wheel, the migrations ship inside the package; in a checkout
    # (editable install) they are the repository's alembic/ folder.
    for candidate in (_PACKAGE / "migrations", _PACKAGE.parents[1] / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("the Alembic migrations are missing from this installation")


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    config.attributes["settings"] = settings
    return config


def upgrade_to_head(settings: Settings) -> None:
    command.upgrade(alembic_config(settings), "head")
