"""Real ``authsvc`` processes: start ``authsvc serve`` on a free port in a scratch directory,
wait until it answers, stop it with SIGTERM, keep what it printed.

Use the ``run_server`` fixture in a test::

    async def test_x(run_server, tmp_path):
        server = run_server(env={"AUTHSVC_JWT_ALGORITHM": "EdDSA"}, args=["--workers", "2"])
        response = httpx.get(f"{server.url}/.well-known/jwks.json")

Servers still running at the end of the test are stopped, and their output is printed (pytest
shows it when the test fails). ``start_server`` is the same without the fixture's clean-up.
``run_cli`` runs any other ``authsvc`` command to completion.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from tests.conftest import ONLY_POSTGRESQL, PG_URL_ENV

READY_PATH = "/.well-known/jwks.json"
# Generous: the machine is shared and a start migrates the schema (and may generate an
# RSA key) before it serves.
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


def authsvc_command() -> list[str]:
    """The installed console script, as users run it (``python -m authsvc`` as fallback)."""
    script = Path(sys.executable).with_name("authsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "authsvc"]


def free_port() -> int:
    """A TCP port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``AUTHSVC_*`` variable, plus ``env``.

    The child sees exactly the configuration the test gives it, whatever the shell that
    runs pytest has set (``AUTHSVC_TEST_DATABASE_URL`` included).
    """
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTHSVC_")}
    base["PYTHONUNBUFFERED"] = "1"
    base.update(env or {})
    return base


@dataclass
class Server:
    """A running ``authsvc serve``; ``output()`` is what it printed so far (stdout+stderr)."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    cwd: Path
    log_path: Path
    returncode: int | None = field(default=None)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Poll ``GET /.well-known/jwks.json`` until 200; fail the test if it exits or hangs."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"authsvc serve exited with {self.process.returncode} before it was"
                        f" ready:\n{self.output()}"
                    )
                try:
                    if client.get(self.url + READY_PATH).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"authsvc serve not ready after {timeout}s:\n{self.output()}")
                time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it hangs; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.returncode = self.process.returncode
        return self.returncode

    def stopped_cleanly(self) -> bool:
        """Shut down gracefully: uvicorn finishes, then re-raises SIGTERM (exit -15) or exits 0."""
        return (
            self.returncode in (0, -signal.SIGTERM) and "Finished server process" in self.output()
        )


def start_server(
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    wait: bool = True,
) -> Server:
    """Start ``authsvc serve --host HOST --port PORT *args`` in ``cwd`` with a clean env.

    Returns once ``GET /.well-known/jwks.json`` answers 200 (``wait=False``: at once; call
    ``server.wait_ready()`` later, e.g. to start several at the same moment). If the process
    exits or never gets ready, it is stopped and the test fails with its output.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = cwd / f"authsvc-serve-{port}.log"
    command = [*authsvc_command(), "serve", "--host", host, "--port", str(port), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://{host}:{port}", port, cwd, log_path)
    if wait:
        server.wait_ready(ready_timeout)
    return server


class ServerFactory(Protocol):
    def __call__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        wait: bool = True,
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
    ) -> Server:
        server = start_server(
            cwd or tmp_path, env=env, args=args, ready_timeout=ready_timeout, wait=wait
        )
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
        print(f"--- authsvc serve on port {server.port} (exit {server.returncode}) ---")
        print(server.output())


def run_cli(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120.0,
    module: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``authsvc ARGS`` (or ``python -m authsvc ARGS``) in ``cwd`` to completion."""
    command = [sys.executable, "-m", "authsvc"] if module else authsvc_command()
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=clean_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
