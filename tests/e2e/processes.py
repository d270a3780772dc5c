"""Run the real ``authsvc`` command: ``serve`` on a free port in a scratch directory with a
clean environment, or any other subcommand to completion."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

# Cheap argon2id so a few hundred logins stay fast; the throttle does not care about cost.
FAST_HASH_ENV = {
    "AUTHSVC_ARGON2_MEMORY_COST": "1024",
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
}


def authsvc_command() -> list[str]:
    script = Path(sys.executable).with_name("authsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "authsvc"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
