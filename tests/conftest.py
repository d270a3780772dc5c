"""Fixtures: real databases (SQLite always, PostgreSQL when AUTHSVC_TEST_DATABASE_URL names
one, which CI always does), the app through its own factory, an HTTP client over ASGI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from authsvc.api.deps import get_now
from authsvc.config import Settings
from authsvc.db import Base, make_engine
from authsvc.main import create_app
from authsvc.migrations import upgrade_to_head

PG_URL_ENV = "AUTHSVC_TEST_DATABASE_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PASSWORD = "correct horse battery staple"
# Cheap argon2id for the suite; tests/unit/test_passwords.py covers the real parameters.
FAST_HASH = {"argon2_memory_cost": 1024, "argon2_time_cost": 1, "argon2_parallelism": 1}
# The service's 2 s statement timeout is a budget for production; CI's shared host has stalled
# single PostgreSQL statements past it (a catalog read, a racer's rotation) in tests about
# something else. Tests that exercise the timeout set their own (tests/api/test_operations.py).
# (PostgreSQL only: on SQLite the timeout also splits a request's 5 s between waits.)
PATIENT_PG = {"db_statement_timeout_seconds": 10.0}


def patient(database_url: str) -> dict[str, float]:
    return PATIENT_PG if database_url.startswith("postgresql") else {}


def pytest_report_header() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        return "postgresql: not configured (its tests are left out)"
    return f"postgresql: {make_url(url).render_as_string(hide_password=True)}"


# Markers the suite sets itself (pyproject.toml declares them):
# - ``slow``: every test under tests/e2e (they start real processes: servers, the CLI, a
#   browser); elsewhere a test that starts a process says so with ``@pytest.mark.slow``, and
#   one that does not is stopped by ``_processes_only_when_slow``. ``scripts/test --fast``
#   runs ``-m "not slow and not postgresql"``.
# - ``postgresql``: every test on the PostgreSQL backend.
# Tests that need a service this machine lacks are left out at collection, and the summary
# says why in one line per service (not one skip per test). Under CI=true nothing is left
# out: the ``backend`` fixture and require_redis() fail those tests instead.
_LEFT_OUT: dict[str, int] = {}
E2E = Path(__file__).parent / "e2e"


def _needs(item: pytest.Item) -> str | None:
    params = getattr(item, "callspec", None)
    values = params.params if params is not None else {}
    if values.get("backend") == "postgresql":
        return "postgresql"
    if values.get("store") == "redis":
        return "redis"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers set here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.slow)
        if _needs(item) == "postgresql":
            item.add_marker(pytest.mark.postgresql)
    if IN_CI:
        return
    from tests.redis_support import redis_answers

    missing: set[str] = set()
    if not os.environ.get(PG_URL_ENV):
        missing.add("postgresql")
    if any(_needs(item) == "redis" for item in items) and not redis_answers():
        missing.add("redis")
    keep, drop = [], []
    for item in items:
        need = _needs(item)
        (drop if need in missing else keep).append(item)
        if need in missing:
            _LEFT_OUT[need] = _LEFT_OUT.get(need, 0) + 1
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: tell the controller
        config.workeroutput["left_out"] = dict(_LEFT_OUT)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    # pytest-xdist's controller (scripts/test --fast): every worker collected the same tests.
    for need, count in getattr(node, "workeroutput", {}).get("left_out", {}).items():
        _LEFT_OUT[need] = max(_LEFT_OUT.get(need, 0), count)


@pytest.fixture(autouse=True)
def _processes_only_when_slow(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked ``slow`` may not start a process (so the fast path stays fast)."""
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        pytest.fail(f"{request.node.nodeid} starts a process ({args!r}): mark it slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    reasons = {
        "postgresql": f"set {PG_URL_ENV} to a throwaway database to run them",
        "redis": "Redis at 127.0.0.1:6379 does not answer",
    }
    for need, count in sorted(_LEFT_OUT.items()):
        terminalreporter.write_line(f"{count} tests need {need}, left out: {reasons[need]}")


async def _reset_postgres(url: str) -> None:
    # The database named by AUTHSVC_TEST_DATABASE_URL is a throwaway: start from nothing.
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql" and not os.environ.get(PG_URL_ENV):
        if IN_CI:
            pytest.fail(f"CI=true but {PG_URL_ENV} is not set: the PostgreSQL tests must run in CI")
        pytest.skip(f"set {PG_URL_ENV} to run the PostgreSQL tests")
    return name


# For a test that is about one backend only: it runs there, and is not collected (rather
# than skipped) for the other.
ONLY_SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
ONLY_POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
async def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'authsvc.db'}"
    else:
        url = os.environ[PG_URL_ENV]
        try:
            await _reset_postgres(url)
        except Exception as exc:
            pytest.fail(f"PostgreSQL at {PG_URL_ENV} is unreachable: {exc}")
    # Migrations, not create_all: the suite runs on the schema users get.
    # (In a thread: Alembic's async env runs its own event loop.)
    # With the init container's statement timeout (docs/deployment.md), not a request's 2 s.
    migrate_with = Settings(database_url=url, db_statement_timeout_seconds=300.0, _env_file=None)  # type: ignore[call-arg]
    await asyncio.to_thread(upgrade_to_head, migrate_with)
    return url


@pytest.fixture
def make_settings(
    database_url: str, key_dir: Path, clean_db: AsyncEngine
) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": key_dir,
            "env": "test",
            **FAST_HASH,
            **patient(database_url),
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
async def db_engine(database_url: str, key_dir: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(
        Settings(
            database_url=database_url, data_dir=key_dir, _env_file=None, **patient(database_url)
        )  # type: ignore[call-arg]
    )
    yield engine
    await engine.dispose()


@pytest.fixture
async def clean_db(db_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The test's database, emptied again when the test ends (tests never share state)."""
    yield db_engine
    async with db_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


ClientFactory = Callable[..., AbstractAsyncContextManager[AsyncClient]]


class FakeClock:
    """The service's clock (the ``Now`` dependency) under the test's control.

    Pass one to ``make_client(clock=...)`` and ``advance`` it instead of sleeping. Only what
    the service computes from ``Now`` moves; PyJWT checks an access token's ``iat`` and ``exp``
    on the real clock, and Redis windows run on Redis's. So the clock starts ten minutes in
    the past: tokens issued after an advance of up to ten minutes are not from the future.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC) - timedelta(minutes=10)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> ClientFactory:
    @asynccontextmanager
    async def factory(
        *, clock: FakeClock | None = None, **overrides: Any
    ) -> AsyncIterator[AsyncClient]:
        app = create_app(make_settings(**overrides))
        if clock is not None:
            app.dependency_overrides[get_now] = clock
        # Generous: a loaded machine (or -n auto) can take more than the default 5 s to start.
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
            transport = ASGITransport(app=manager.app, client=("203.0.113.7", 50000))
            async with AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[AsyncClient]:
    async with make_client() as client:
        yield client


def bearer(token: str, **headers: str) -> dict[str, Any]:
    """The ``Authorization`` header that presents ``token`` (plus any other ``headers``)."""
    value = f"Bearer {token}"
    # httpx refuses a non-ASCII str header value; a hostile client sends the bytes anyway.
    return {"Authorization": value if value.isascii() else value.encode(), **headers}


@pytest.fixture
def redis_key_prefix() -> Iterator[str]:
    """A Redis key prefix of the test's own; its keys are deleted when the test ends."""
    from tests.redis_support import delete_keys, redis_answers

    prefix = f"authsvc-test-{uuid.uuid4().hex}"
    yield prefix
    if redis_answers():
        # On an event loop of its own, whatever the test's loop is doing.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, delete_keys(prefix)).result()


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def register(
    client: AsyncClient, username: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    username = username or unique_username()
    response = await client.post("/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(
    client: AsyncClient, username: str, password: str = PASSWORD, **params: str
) -> dict[str, Any]:
    response = await client.post(
        "/login", json={"username": username, "password": password}, params=params
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def user(client: AsyncClient) -> dict[str, Any]:
    return await register(client)


@pytest.fixture
async def tokens(client: AsyncClient, user: dict[str, Any]) -> dict[str, Any]:
    return await login(client, user["username"])
