"""Real processes for end-to-end tests: the `authsvc` command (`serve` on a free port in a
scratch directory with a clean environment, other subcommands to completion) and a private
PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

FAST_HASH_ENV = {
    "AUTHSVC_ARGON2_MEMORY_COST": "1024",
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def authsvc_command() -> list[str]:
    script = Path(sys.executable).with_name("authsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "authsvc"]


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``AUTHSVC_*`` variable, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTHSVC_")}
    base["PYTHONUNBUFFERED"] = "1"
    base.update(env or {})
    return base


def run_cli(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*authsvc_command(), *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def serving(
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    ready_timeout: float = 60,
) -> Iterator[str]:
    """``authsvc serve`` until the block ends; yields its base URL once it answers."""
    cwd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*authsvc_command(), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"authsvc serve exited {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                if httpx.get(url + "/.well-known/jwks.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"authsvc serve not ready:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        print(log_path.read_text(errors="replace"))


@dataclass
class Server:
    """One `authsvc serve` process (a supervisor and its workers when --workers > 1)."""

    proc: subprocess.Popen[bytes]
    port: int
    cwd: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; SIGKILL (and fail) if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"server did not stop within {timeout}s:\n{self.log()[-3000:]}"
            ) from None


def server_env(
    database_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    # The parent's AUTHSVC_* (and a stray PROMETHEUS_MULTIPROC_DIR) must not leak in.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUTHSVC_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        {
            "AUTHSVC_DATABASE_URL": database_url,
            "AUTHSVC_DATA_DIR": str(data_dir),
            "AUTHSVC_LOG_FORMAT": "json",
            "AUTHSVC_COOKIE_SECURE": "false",
            **FAST_HASH_ENV,
            **(extra or {}),
        }
    )
    return env


def start_server(
    env: Mapping[str, str], cwd: Path, *, workers: int = 1, ready_timeout: float = 60
) -> Server:
    """Start `authsvc serve` on a free port and wait until /healthz answers."""
    cwd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authsvc",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, cwd, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"authsvc serve exited with {proc.returncode}:\n{server.log()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise AssertionError(f"authsvc serve did not become healthy:\n{server.log()[-3000:]}")


@contextlib.contextmanager
def running_server(env: Mapping[str, str], cwd: Path, *, workers: int = 1) -> Iterator[Server]:
    server = start_server(env, cwd, workers=workers)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.terminate()


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

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

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
        cluster._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(cluster.data),
            "-m",
            "immediate",
            "-w",
            "stop",
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
