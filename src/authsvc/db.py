"""Declarative base, a UTC datetime type that round-trips on SQLite, and the engine factory."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect, Engine, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_, greenlet_spawn

from authsvc.config import Settings
from authsvc.errors import ServiceUnavailable

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores text without an offset, so values are
    normalised to UTC on the way in and tagged as UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver's error it wraps, and their causes (asyncpg's own exception)."""
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is seen for seen in chain) or len(chain) > 8:
            continue
        chain.append(item)
        todo.extend([getattr(item, "orig", None), item.__cause__, item.__context__])
    return chain


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        from pathlib import Path

        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


class _HideRows(logging.Filter):
    """Blank the result rows SQLAlchemy logs at DEBUG: they hold password and token hashes.

    ``hide_parameters`` covers bound parameters only; this covers what comes back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Row "):
            record.msg, record.args = "Row [hidden]", ()
        return True


class _HideDriverCalls(logging.Filter):
    """aiosqlite logs each call with its arguments (statement parameters) at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG and record.args:
            record.args = (
                tuple("[hidden]" for _ in record.args) if isinstance(record.args, tuple) else ()
            )
        return True


def hide_logged_rows() -> None:
    """Keep stored secrets out of database DEBUG logs, whoever turns them on (once)."""
    for name, kind in (("sqlalchemy.engine.Engine", _HideRows), ("aiosqlite", _HideDriverCalls)):
        target = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in target.filters):
            target.addFilter(kind())


def make_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    """Build the async engine for ``settings.database.database_url`` with the service's timeouts.

    On SQLite, SQLAlchemy takes over BEGIN (``BEGIN IMMEDIATE``, so a transaction that
    reads and then writes cannot fail half way with ``database is locked``) and foreign
    keys are enforced; on PostgreSQL, connect and statement timeouts keep a dead or hung
    database from hanging requests.
    """
    url = settings.database.database_url
    hide_logged_rows()
    if is_sqlite(url):
        _ensure_sqlite_directory(url)
        engine = create_async_engine(
            url,
            **_with_overrides(
                {
                    "connect_args": {"timeout": settings.database.db_statement_timeout_seconds},
                    "pool_timeout": settings.database.db_pool_timeout_seconds,
                },
                overrides,
            ),
        )
        install_sqlite_hooks(
            engine, busy_timeout_ms=int(settings.database.db_statement_timeout_seconds * 1000)
        )
        install_error_translation(engine)
        # A writer waits for its turn in this process, then (as the one writer of this
        # process) for the other processes' writers: both within a request's 5 s.
        _WRITER_TURNS[engine.sync_engine] = WriterTurns(
            max(0.5, REQUEST_BUDGET_SECONDS - settings.database.db_statement_timeout_seconds)
        )
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": settings.database.db_pool_size,
        "max_overflow": settings.database.db_max_overflow,
        "pool_timeout": settings.database.db_pool_timeout_seconds,
        "pool_recycle": 1800,
        "connect_args": _asyncpg_connect_args(settings),
    }
    engine = create_async_engine(url, **_with_overrides(kwargs, overrides))
    install_checkout_check(engine, timeout=settings.database.db_statement_timeout_seconds)
    install_error_translation(engine)
    if settings.database.db_pgbouncer:
        engine = engine.execution_options(**{BEHIND_PGBOUNCER: True})
    return engine


# An engine option: the engine talks to PgBouncer in transaction mode.
BEHIND_PGBOUNCER = "authsvc_behind_pgbouncer"


# A pooled connection that has been idle longer than this is pinged before use.
PING_AFTER_IDLE_SECONDS = 5.0
_IDLE_SINCE = "authsvc_idle_since"


def install_checkout_check(engine: AsyncEngine, *, timeout: float) -> None:
    """Hand out only live connections, at the cost of a round trip only when it can matter.

    SQLAlchemy's ``pool_pre_ping`` costs every checkout three round trips on asyncpg
    (``BEGIN``, a query, ``ROLLBACK``): more than a bearer check's own query. Here a
    connection the server has closed (a restart, a terminated backend: asyncpg sees the
    socket close) is replaced without any; one that has sat in the pool for over
    ``PING_AFTER_IDLE_SECONDS`` (a firewall or proxy may have dropped it silently) is
    pinged with one simple-protocol query, which PgBouncer's transaction mode also serves.
    A failed check makes the pool replace the connection, as a failed pre-ping did.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver.is_closed():
            raise DisconnectionError("the server closed the connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            await_(driver.execute(";", timeout=timeout))
        except Exception as exc:
            raise DisconnectionError("the connection failed its ping") from exc


# What a driver raises, unwrapped, when the database's connection fails under it: the
# socket (refused, reset) or the driver's own timeouts (connect, command_timeout).
_CONNECTION_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def install_error_translation(engine: AsyncEngine) -> None:
    """Every failure of the database's connection reaches the caller as a SQLAlchemy
    ``OperationalError`` (its ``orig`` the driver's exception), so that the API can tell a
    database that is down (503) from any other ``OSError`` or timeout in the code (a bug).

    SQLAlchemy wraps the driver's DB-API errors itself; asyncpg raises socket errors and
    timeouts as they are, and the errors of a connect attempt unwrapped.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except _CONNECTION_FAILURES as exc:
            raise OperationalError("connect", None, exc) from exc

    # The pool's pre-ping calls the dialect directly, outside handle_error's reach.
    dialect = engine.sync_engine.dialect
    ping = dialect.do_ping

    def _ping(dbapi_connection: Any) -> bool:
        try:
            return ping(dbapi_connection)
        except (OSError, TimeoutError) as exc:
            raise OperationalError("ping", None, exc) from exc

    dialect.do_ping = _ping  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        original = context.original_exception
        if context.sqlalchemy_exception is None and isinstance(original, OSError | TimeoutError):
            return OperationalError(context.statement, None, original)
        return None


def _asyncpg_connect_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connection_class": QuickCloseConnection,
        "timeout": settings.database.db_connect_timeout_seconds,
        # Enforced by the client (and a cancel request), so it holds behind PgBouncer too.
        "command_timeout": settings.database.db_statement_timeout_seconds,
        "server_settings": {"application_name": "authsvc"},
    }
    if settings.database.db_pgbouncer:
        # Transaction pooling hands each transaction whichever server connection is free:
        # a statement prepared on one is unknown (or its name taken) on the next. So no
        # caches, and names that cannot collide. PgBouncer refuses session settings as
        # startup parameters; the statement timeout then belongs on the role
        # (docs/deployment.md).
        args["statement_cache_size"] = 0
        args["prepared_statement_cache_size"] = 0
        args["prepared_statement_name_func"] = _unique_statement_name
    else:
        args["server_settings"].update(
            statement_timeout=str(int(settings.database.db_statement_timeout_seconds * 1000)),
            idle_in_transaction_session_timeout="30000",
        )
    return args


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


class QuickCloseConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose graceful close gives up quickly.

    SQLAlchemy closes an invalidated connection gracefully with a 2 s timeout before it
    aborts it; on a hung server that wait would come on top of the statement timeout and
    push the 503 past the 5 s the README promises (*Configuration*). A healthy server answers
    a close in milliseconds.
    """

    CLOSE_TIMEOUT_SECONDS = 0.5

    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg API
        limit = self.CLOSE_TIMEOUT_SECONDS
        await super().close(timeout=limit if timeout is None else min(timeout, limit))


def _with_overrides(kwargs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    # Parameters (password hashes, token hashes) never reach an error message or a log.
    merged = {"hide_parameters": True, **kwargs, **overrides}
    if overrides.get("poolclass") is not None and overrides["poolclass"].__name__ == "NullPool":
        for key in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle"):
            merged.pop(key, None)
    return merged


def install_sqlite_hooks(engine: AsyncEngine, *, busy_timeout_ms: int = 5000) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's own handling breaks SAVEPOINT).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front (a read that later writes cannot fail half way);
        # a transaction marked read-only does not, so readers never queue behind writers.
        read_only = conn.get_execution_options().get(READ_ONLY)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY = "authsvc_read_only"
# What a request may spend waiting for the database before it is answered 503 (README).
REQUEST_BUDGET_SECONDS = 5.0


async def begin_read_only(session: AsyncSession) -> None:
    """Start ``session``'s next transaction as a read-only one (a deferred BEGIN on SQLite).

    Call it before the transaction's first statement; the transaction must not write.
    """
    if not session.in_transaction():
        await session.connection(execution_options={READ_ONLY: True})


class WriterTurns:
    """SQLite takes one writer at a time: the writers of one process take turns here, in
    order, so that at most one of them at a time waits on the database's lock (and its
    busy timeout) against other processes. A writer that cannot get its turn within
    ``wait_seconds`` is refused with ``ServiceUnavailable`` (503).
    """

    def __init__(self, wait_seconds: float) -> None:
        self._wait_seconds = wait_seconds
        # One lock per event loop (a test suite runs several loops in one process).
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        try:
            async with asyncio.timeout(self._wait_seconds):
                await lock.acquire()
        except TimeoutError:
            raise ServiceUnavailable() from None
        try:
            yield
        finally:
            lock.release()


_WRITER_TURNS: weakref.WeakKeyDictionary[Engine, WriterTurns] = weakref.WeakKeyDictionary()


def writer_turns(session: AsyncSession) -> WriterTurns | None:
    """The turns of the writers of ``session``'s SQLite database; ``None`` on PostgreSQL."""
    bind = session.bind
    if bind is None or bind.dialect.name != "sqlite":
        return None
    sync_engine = bind.sync_engine if isinstance(bind, AsyncEngine) else bind
    turns = _WRITER_TURNS.get(sync_engine)  # type: ignore[arg-type]
    if turns is None:  # an engine built without make_engine (tests)
        turns = _WRITER_TURNS[sync_engine] = WriterTurns(REQUEST_BUDGET_SECONDS)  # type: ignore[index]
    return turns


# -- the driver's own connection, for the hot paths on PostgreSQL ----------------------------


def driver_engine(session: AsyncSession) -> AsyncEngine | None:
    """The engine whose pooled connections a hot path may use through asyncpg directly, or
    ``None`` (SQLite; PgBouncer; ``session`` already in a transaction): then the path takes
    SQLAlchemy as everything else does.

    SQLAlchemy's execution layer costs three to five times the driver's own CPU per statement
    (docs/deployment.md, "Capacity"): the bearer check and the rotation, which run on every
    request, skip it. Only single statements in autocommit and transactions of their own
    take this way, never a statement inside a unit of work's transaction. Behind PgBouncer
    in transaction mode asyncpg's prepare and execute of one statement could reach two server
    connections, so there the path stays on SQLAlchemy.
    """
    bind = session.bind
    if (
        not isinstance(bind, AsyncEngine)
        or bind.dialect.name != "postgresql"
        or session.in_transaction()
        or bind.get_execution_options().get(BEHIND_PGBOUNCER)
    ):
        return None
    return bind


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """One of ``engine``'s pooled connections, as the asyncpg connection under it.

    Checked out and in through the pool (its size, timeout and checkout check hold). With no
    transaction, every statement commits on its own; ``connection.transaction()`` makes one.
    A connection that failed under a statement (socket, timeout, closed) is dropped from the
    pool, and the failure reaches the API as the 503 of any other database failure.
    """
    gate = _checkout_gate(engine)
    if gate.locked():
        try:
            async with asyncio.timeout(gate.timeout):
                await gate.acquire()
        except TimeoutError:
            raise PoolTimeoutError("no pooled connection came free in time") from None
    else:
        await gate.acquire()  # a free place: taken at once
    try:
        raw = await engine.raw_connection()
    except BaseException as exc:
        gate.release()
        # A connect the driver refused ("too many clients"): wrapped as SQLAlchemy wraps it
        # for a Connection (raw_connection does not), so the API answers 503.
        dbapi = engine.dialect.loaded_dbapi
        if isinstance(exc, DBAPIError) or not isinstance(exc, dbapi.Error):
            raise
        raise DBAPIError.instance(None, None, exc, dbapi.Error) from exc
    driver: Any = raw.driver_connection
    failed: BaseException | None = None
    try:
        yield driver
    except BaseException as exc:
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        refused = isinstance(exc, asyncpg.PostgresError) and not sqlstate.startswith(("08", "57P"))
        if not refused or driver.is_closed():
            # Anything but the server's refusal of a statement (a socket error, a timeout, a
            # task cancelled mid-statement, the server shutting down) may leave the protocol
            # half way through an operation: the connection must never serve another request.
            driver.terminate()
            failed = exc
        if isinstance(exc, OSError | TimeoutError | asyncpg.InternalClientError):
            # The connection failed under the statement: the API's 503 (api.errors).
            raise OperationalError("driver", None, exc, connection_invalidated=True) from exc
        raise
    finally:
        # Shielded: a cancelled request still gives its connection and its place back.
        with anyio.CancelScope(shield=True):
            try:
                if failed is not None:
                    await greenlet_spawn(raw.invalidate, failed)
                await greenlet_spawn(raw.close)
            finally:
                gate.release()


class _Gate(asyncio.Semaphore):
    """As many places as the pool has connections, handed out in arrival order.

    The pool's own queue lets a newcomer take a connection that was just returned before the
    request that has waited longest wakes up (asyncio's ``Queue``; SQLAlchemy issue 7679): under
    a steady load larger than the pool, one unlucky request waits out the pool timeout and gets
    a 503 while the pool turns over thousands of times a second. asyncio's ``Semaphore`` is
    first come, first served.
    """

    def __init__(self, places: int, timeout: float) -> None:
        super().__init__(places)
        self.timeout = timeout


# Per engine, and per event loop (a semaphore belongs to the loop it first waits on).
_GATES: weakref.WeakKeyDictionary[
    Engine, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate]
] = weakref.WeakKeyDictionary()


def _checkout_gate(engine: AsyncEngine) -> _Gate:
    gates = _GATES.setdefault(engine.sync_engine, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    gate = gates.get(loop)
    if gate is None:
        pool: Any = engine.sync_engine.pool
        size = pool.size() if hasattr(pool, "size") else 1_000_000
        gate = gates[loop] = _Gate(size, getattr(pool, "_timeout", 30.0))
    return gate


class DriverStatement:
    """A SQL text with ``:name`` parameters, rewritten once into asyncpg's ``$1, $2 ...``.

    asyncpg prepares it once per connection (its statement cache) and infers the parameters'
    types from the statement, as it does for SQLAlchemy's ``text()``.
    """

    _NAME = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        self.sql = self._NAME.sub(number, sql)
        self.names = tuple(names)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


@asynccontextmanager
async def request_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for one request, closed at the end if it was used.

    Closing an ``AsyncSession`` always crosses into a greenlet (a fresh one, with its own
    frame stack: an ``mmap``/``munmap`` pair per request). A session that began no
    transaction and holds no objects (the bearer check and the rotation on PostgreSQL use
    the driver directly) holds nothing to release.
    """
    session = sessionmaker()
    try:
        yield session
    finally:
        if session.in_transaction() or session.sync_session.identity_map or session.info:
            await session.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
