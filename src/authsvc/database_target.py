"""Which database a command acts on, said in one line, and whether it exists yet.

The CLI names its database in what it prints, and its admin commands refuse one that does
not exist instead of creating it (a relative SQLite path lands wherever the command runs).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from authsvc.config import Settings
from authsvc.db import error_chain, make_engine

# PostgreSQL's SQLSTATE for "database does not exist" (class 3D, invalid catalog name).
_NO_SUCH_DATABASE = "3D000"


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or ``None`` for an in-memory or URI-style database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def describe(settings: Settings) -> str:
    """The database as an operator recognises it: a SQLite file's absolute path, or the URL
    without its password."""
    url = settings.database.database_url
    file = _sqlite_file(url)
    if file is not None:
        return str(file.resolve())
    return make_url(url).render_as_string(hide_password=True)


def creatable(settings: Settings) -> bool:
    """Whether opening the database creates it (a SQLite file; a server's database not)."""
    return make_url(settings.database.database_url).get_backend_name() == "sqlite"


def how_to_create(settings: Settings) -> str:
    """What to do about a database that is not there (for a one-line refusal)."""
    if _sqlite_file(settings.database.database_url) is not None:
        return (
            "run the command where the service keeps its var/ directory, or set"
            " AUTHSVC_DATABASE_URL; `authsvc migrate` creates a new one"
        )
    return "create it (createdb) and run `authsvc migrate`, or set AUTHSVC_DATABASE_URL"


def _sqlstates(exc: BaseException) -> set[str]:
    codes = (
        getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        for item in error_chain(exc)
    )
    return {code for code in codes if isinstance(code, str)}


async def exists(settings: Settings) -> bool:
    """Whether the database is there already. A SQLite file is looked for, not opened
    (opening one creates it); a server is connected to. Other connection failures raise."""
    url = settings.database.database_url
    if make_url(url).get_backend_name() == "sqlite":
        file = _sqlite_file(url)
        return file is None or file.is_file()
    engine = make_engine(settings, poolclass=pool.NullPool)
    try:
        async with engine.connect():
            return True
    except DBAPIError as exc:
        if _NO_SUCH_DATABASE in _sqlstates(exc):
            return False
        raise
    finally:
        await engine.dispose()
