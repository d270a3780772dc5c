"""Running the real ``authsvc`` command against a test database."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_DATA_DIR=str(data_dir),
        AUTHSVC_ENV="test",
        **extra,
    )
    return env


async def run_cli(
    *args: str, database_url: str, data_dir: Path, cwd: Path, stdin: str | None = None, **env: str
) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authsvc",
        *args,
        cwd=cwd,
        env=cli_env(database_url, data_dir, **env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 120)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())
