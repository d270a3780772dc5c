"""Fixtures for tests that run real ``authsvc`` processes (the helpers are in processes.py).

Use the ``run_server`` fixture in a test::

    async def test_x(run_server, tmp_path):
        server = run_server(env={"AUTHSVC_JWT_ALGORITHM": "EdDSA"}, args=["--workers", "2"])
        response = httpx.get(f"{server.url}/.well-known/jwks.json")

Servers still running at the end of the test are stopped, and their output is printed (pytest
shows it when the test fails).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from tests.conftest import ONLY_POSTGRESQL, PG_URL_ENV
from tests.e2e.processes import READY_TIMEOUT_SECONDS, Server, start_server


class ServerFactory(Protocol):
    def __call__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        wait: bool = True,
        verify: ssl.SSLContext | None = None,
    ) -> Server: ...


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers (default cwd: the test's tmp_path); all are stopped at teardown."""
    servers: list[Server] = []

    def factory(
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        wait: bool = True,
        verify: ssl.SSLContext | None = None,
    ) -> Server:
        server = start_server(
            cwd or tmp_path,
            env=env,
            args=args,
            ready_timeout=ready_timeout,
            wait=wait,
            verify=verify,
        )
        servers.append(server)
        return server

    yield factory
    hung: list[AssertionError] = []
    for server in servers:
        try:
            server.stop()
        except AssertionError as error:
            hung.append(error)
        print(f"--- authsvc serve on port {server.port} (exit {server.returncode}) ---")
        print(server.output())
    if hung:
        raise hung[0]


@pytest.fixture
def server_database_url(database_url: str, clean_db: object) -> str:
    """The test database of the ``backend`` param (migrated, emptied after the test), for a
    server's ``AUTHSVC_DATABASE_URL``; the ``db_engine`` fixture reads the same database."""
    return database_url


@pytest.fixture
def postgres_url(backend: str, database_url: str, clean_db: object) -> str:
    """The test PostgreSQL database (migrated, emptied after the test) for server processes.

    Use with ``@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)``.
    """
    assert backend == "postgresql", "use with POSTGRES_ONLY"
    assert os.environ.get(PG_URL_ENV)
    return database_url


POSTGRES_ONLY = ONLY_POSTGRESQL
