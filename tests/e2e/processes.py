"""Real processes for tests: the ``authsvc`` command and a private PostgreSQL cluster.

``start_server`` runs ``authsvc serve`` on a free port in a scratch directory with a clean
environment, waits until it answers and returns a ``Server`` (``output()``, ``stop()``,
``stopped_cleanly()``); ``running_server`` is the same as a ``with`` block, and the
``run_server`` fixture (tests/e2e/conftest.py) stops whatever a test started. ``run_cli``
(``run_cli_async`` in async tests) runs any other subcommand to completion.
``private_postgres`` gives a throwaway cluster that a test may stop, restart or freeze.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

READY_PATH = "/.well-known/jwks.json"
# Generous: the machine is shared and a start migrates the schema (and may generate an
# RSA key) before it serves.
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0

FAST_HASH_ENV = {
    "AUTHSVC_ARGON2_MEMORY_COST": "1024",
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
}


def free_port() -> int:
    """A TCP port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def authsvc_command(*, module: bool = False) -> list[str]:
    """The installed console script, as users run it (``python -m authsvc`` as fallback,
    or when ``module`` asks for it)."""
    script = Path(sys.executable).with_name("authsvc")
    if module or not script.exists():
        return [sys.executable, "-m", "authsvc"]
    return [str(script)]


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``AUTHSVC_*`` variable, plus ``env``.

    The child sees exactly the configuration the test gives it, whatever the shell that
    runs pytest has set (``AUTHSVC_TEST_DATABASE_URL`` included). A stray
    ``PROMETHEUS_MULTIPROC_DIR`` goes too: ``serve --workers`` makes its own.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("AUTHSVC_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    base["PYTHONUNBUFFERED"] = "1"
    base.update(env or {})
    return base


def server_env(
    database_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Settings for a server on ``database_url``: JSON logs, plain-HTTP cookies, fast hashing."""
    return {
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_DATA_DIR": str(data_dir),
        "AUTHSVC_LOG_FORMAT": "json",
        "AUTHSVC_COOKIE_SECURE": "false",
        **FAST_HASH_ENV,
        **(extra or {}),
    }


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for a command (or server) on ``database_url`` in the test environment."""
    return {
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_DATA_DIR": str(data_dir),
        "AUTHSVC_ENV": "test",
        **extra,
    }


# -- authsvc serve ------------------------------------------------------------------------


@dataclass
class Server:
    """A running ``authsvc serve`` (a supervisor and its workers when ``--workers`` > 1);
    ``output()`` is what it printed so far (stdout and stderr)."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    cwd: Path
    log_path: Path
    returncode: int | None = field(default=None)
    # What clients verify the server's certificate with (served over TLS).
    verify: ssl.SSLContext | bool = True

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Poll ``GET /.well-known/jwks.json`` until 200; fail the test if it exits or hangs."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, verify=self.verify) as client:
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
                    with contextlib.suppress(AssertionError):
                        self.stop()
                    pytest.fail(f"authsvc serve not ready after {timeout}s:\n{self.output()}")
                time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM (uvicorn's graceful shutdown) and wait; the exit code.

        A server that does not stop in time is killed and the test fails: shutting down on
        SIGTERM is part of what these tests check.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                self.returncode = self.process.returncode
                raise AssertionError(
                    f"authsvc serve did not stop within {timeout}s:\n{self.output()[-3000:]}"
                ) from None
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
    verify: ssl.SSLContext | None = None,
) -> Server:
    """Start ``authsvc serve --host HOST --port PORT *args`` in ``cwd`` with ``clean_env(env)``.

    With ``--ssl-certfile`` in ``args`` its URL is ``https://``, checked with ``verify``
    (an ``ssl.SSLContext`` that trusts the test's CA).

    Returns once ``GET /.well-known/jwks.json`` answers 200 (``wait=False``: at once; call
    ``server.wait_ready()`` later, e.g. to start several at the same moment). If the process
    exits or never gets ready, it is stopped and the test fails with its output. The caller
    stops it (or uses ``running_server`` or the ``run_server`` fixture).
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
    scheme = "https" if "--ssl-certfile" in args else "http"
    server = Server(
        process,
        f"{scheme}://{host}:{port}",
        port,
        cwd,
        log_path,
        verify=verify if verify is not None else True,
    )
    if wait:
        server.wait_ready(ready_timeout)
    return server


@contextlib.contextmanager
def running_server(
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> Iterator[Server]:
    """``start_server`` until the block ends; then stopped, and its output printed."""
    server = start_server(cwd, env=env, args=args, ready_timeout=ready_timeout)
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            print(f"--- authsvc serve on port {server.port} (exit {server.returncode}) ---")
            print(server.output())


# -- other authsvc commands ---------------------------------------------------------------


def run_cli(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120.0,
    module: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``authsvc ARGS`` (or ``python -m authsvc ARGS``) in ``cwd`` to completion, with
    ``clean_env(env)`` and ``input`` (if any) on stdin."""
    return subprocess.run(
        [*authsvc_command(module=module), *args],
        cwd=cwd,
        env=clean_env(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


async def run_cli_async(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> CliResult:
    """``run_cli`` in a thread, for async tests: the event loop keeps running meanwhile."""
    done = await asyncio.to_thread(run_cli, cwd, *args, env=env, input=input)
    return CliResult(done.returncode, done.stdout, done.stderr)


# -- a private PostgreSQL cluster ---------------------------------------------------------


def postgres_bindir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PgCluster:
    """A throwaway cluster in a temporary directory, on a free port, trust auth."""

    bindir: Path
    base: Path
    port: int = field(default_factory=free_port)
    options: str = ""  # more "-c name=value" for the server

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_postgres_user(list(args)), check=check, capture_output=True, text=True, timeout=120
        )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
            f"{self.options}"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "pg.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=check
        )

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        root = self.postmaster_pid()
        found = [root]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command may hold spaces and parentheses: the ppid follows the last ')'.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == root:
                found.append(int(entry.name))
        return found

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster first (so it starts nothing new), then its children."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    def thaw(self, pids: list[int]) -> None:
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def log(self) -> str:
        try:
            return (self.base / "pg.log").read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def private_postgres(options: str = "") -> Iterator[PgCluster]:
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb) found")
    base = Path(tempfile.mkdtemp(prefix="authsvc-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, user="postgres", group="postgres")
    cluster = PgCluster(bindir, base, options=options)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.thaw(cluster.pids())
        cluster.stop("immediate", check=False)
        shutil.rmtree(base, ignore_errors=True)
