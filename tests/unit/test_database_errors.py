"""Which database failures mean "unavailable" (503) and which are bugs (500)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from authsvc.api.errors import is_database_unavailable


class _Orig(Exception):
    """Stands in for a DB-API error that carries a SQLSTATE, as SQLAlchemy's adapters do."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(cls: type[DBAPIError], orig: BaseException) -> DBAPIError:
    return cls("SELECT 1", {}, orig)  # type: ignore[arg-type]


def _with_cause(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        # Wrapped by db.install_error_translation: the database's connection failed.
        wrapped(OperationalError, ConnectionRefusedError(111, "Connection refused")),
        wrapped(OperationalError, TimeoutError()),
        wrapped(OperationalError, ConnectionResetError(104, "Connection reset by peer")),
        PoolTimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        wrapped(DBAPIError, _Orig("terminating connection", "57P01")),
        wrapped(DBAPIError, _Orig("server closed the connection", "08006")),
        wrapped(OperationalError, _Orig("too many connections", "53300")),
        wrapped(OperationalError, _Orig("canceling statement due to statement timeout", "57014")),
        wrapped(OperationalError, type("OperationalError", (Exception,), {})("database is locked")),
        wrapped(DBAPIError, type("InterfaceError", (Exception,), {})("connection is closed")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outages_are_unavailable(exc: BaseException) -> None:
    assert is_database_unavailable(exc)


def test_an_invalidated_connection_is_unavailable() -> None:
    exc = DBAPIError("SELECT 1", {}, _Orig("anything"), connection_invalidated=True)  # type: ignore[arg-type]
    assert is_database_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(IntegrityError, _Orig("duplicate key value", "23505")),
        wrapped(ProgrammingError, _Orig("syntax error", "42601")),
        wrapped(DBAPIError, _Orig("value too long", "22001")),
        asyncpg.UniqueViolationError("duplicate key value"),
        wrapped(
            OperationalError, type("OperationalError", (Exception,), {})("no such table: users")
        ),
        RuntimeError("a bug"),
        # Not the database's: a file or socket of the code's own.
        PermissionError(13, "Permission denied"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        _with_cause(RuntimeError("a bug"), ConnectionResetError(104, "reset")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_are_not_unavailable(exc: BaseException) -> None:
    assert not is_database_unavailable(exc)
