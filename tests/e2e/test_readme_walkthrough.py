"""The README's curl walk-through, run as written (bash, curl, python3) against a real
``authsvc serve``: every command works, and prints what the README says it prints.

The block is the first ``sh`` block under "Walk-through with curl". A comment line that starts
with ``# {`` or ``# HTTP/`` is the output of the command above it (``…`` stands for anything);
the step after a comment saying the access token "has expired" runs once it has: the server
runs with AUTHSVC_ACCESS_TOKEN_TTL_SECONDS=5, as the README suggests to see it sooner, so the
README's `"expires_in":1800` is read as 5.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.processes import clean_env, running_server

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
ACCESS_TTL = 5


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    after_expiry: bool = False


def walkthrough_block(readme: str) -> str:
    section = readme.split("## Walk-through with curl", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "no sh block under 'Walk-through with curl'"
    return match.group(1)


def parse_steps(block: str) -> list[Step]:
    steps: list[Step] = []
    pending: list[str] = []
    expired = False
    for line in block.splitlines():
        stripped = line.strip()
        if pending:
            pending.append(line)
            if not stripped.endswith("\\"):
                steps.append(Step("\n".join(pending), after_expiry=expired))
                pending, expired = [], False
            continue
        if not stripped:
            continue
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text.startswith(("{", "HTTP/")) and steps:
                steps[-1].expected.append(text)
            elif "has expired" in text:
                expired = True
            continue
        if stripped.endswith("\\"):
            pending = [line]
        else:
            steps.append(Step(line, after_expiry=expired))
            expired = False
    assert not pending, "a command ends with a line continuation"
    return steps


def pattern(expected: list[str]) -> re.Pattern[str]:
    expected = [e.replace('"expires_in":1800', f'"expires_in":{ACCESS_TTL}') for e in expected]
    parts = [
        ".*".join(re.escape(piece) for piece in re.split(r"\s*…\s*", line)) for line in expected
    ]
    return re.compile(".*".join(parts), re.DOTALL)


def test_the_walkthrough_is_parsed_into_steps_with_outputs() -> None:
    steps = parse_steps(walkthrough_block(README.read_text()))
    assert len(steps) >= 8
    assert sum(1 for s in steps if s.expected) >= 4
    assert sum(1 for s in steps if s.after_expiry) == 1
    assert all("localhost:8000" in s.command for s in steps if s.command.startswith("curl"))


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    for tool in ("bash", "curl", "python3"):
        assert shutil.which(tool), f"the walk-through needs {tool}"
    steps = parse_steps(walkthrough_block(README.read_text()))
    env = {
        "AUTHSVC_ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL),
        "AUTHSVC_COOKIE_SECURE": "false",
        "AUTHSVC_LOG_FORMAT": "json",
        "AUTHSVC_ARGON2_MEMORY_COST": "1024",
        "AUTHSVC_ARGON2_TIME_COST": "1",
    }
    with running_server(tmp_path / "server", env=env) as server:
        host = server.url.removeprefix("http://")
        work = tmp_path / "shell"
        work.mkdir()
        script = ["set -e"]
        for i, step in enumerate(steps):
            if step.after_expiry:
                script.append(f"sleep {ACCESS_TTL + 1}")
            script.append(f"echo '@@@ step {i}'")
            script.append(step.command.replace("localhost:8000", host))
            script.append("echo")
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=work,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = re.split(r"^@@@ step \d+\n", done.stdout, flags=re.MULTILINE)[1:]
    assert len(outputs) == len(steps), done.stdout
    for step, output in zip(steps, outputs, strict=True):
        if step.expected:
            assert pattern(step.expected).search(output), (
                f"{step.command}\nprinted:\n{output}\nthe README says:\n" + "\n".join(step.expected)
            )
        assert "Internal Server Error" not in output


def test_the_readme_command_line_block_runs_as_written(tmp_path: Path) -> None:
    """The first ``sh`` block under "Command line", in a checkout that has installed once
    (scripts/, the files the install is keyed on, and this .venv)."""
    root = README.parent
    section = README.read_text().split("\n## Command line\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "no sh block under 'Command line'"
    checkout = tmp_path / "checkout"
    shutil.copytree(root / "scripts", checkout / "scripts")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy2(root / name, checkout / name)
    (checkout / ".venv").symlink_to(root / ".venv")
    done = subprocess.run(
        ["bash", "-e", "-c", match.group(1)],
        cwd=checkout,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    database = checkout / "var" / "authsvc.db"
    assert "Usage: authsvc" in done.stdout
    assert "created user bob (" in done.stdout
    assert f"in {database}, a new database" in done.stdout
    assert f"event(s) from {database}" in done.stderr
    assert "installing" not in done.stderr  # the stamp matched: nothing was reinstalled


def test_scripts_serve_says_what_it_is_doing(tmp_path: Path) -> None:
    """`scripts/serve` in a checkout that has installed once: it says it migrates and serves,
    where the database and the generated key are, and the docs page's URL."""
    import time

    import httpx

    from tests.e2e.processes import free_port

    root = README.parent
    checkout = tmp_path / "checkout"
    shutil.copytree(root / "scripts", checkout / "scripts")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy2(root / name, checkout / name)
    (checkout / ".venv").symlink_to(root / ".venv")
    port = free_port()
    log = tmp_path / "serve.log"
    env = clean_env({"AUTHSVC_LOG_FORMAT": "text", "AUTHSVC_ARGON2_MEMORY_COST": "1024"})
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["scripts/serve", "--port", str(port)],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"scripts/serve never answered:\n{log.read_text()}")
    finally:
        process.terminate()
        process.wait(30)
    output = log.read_text()
    var = checkout / "var"
    for expected in (
        f"authsvc: serving from {checkout}: migrating the database schema",
        f"database created: {var / 'authsvc.db'}, schema up to date",
        f"development signing key generated: {var / 'jwt-es256.pem'}",
        f"docs page: http://127.0.0.1:{port}/docs",
    ):
        assert expected in output, output
    assert "Traceback" not in output


def test_the_resource_service_example_runs_as_its_readme_says(tmp_path: Path) -> None:
    """examples/resource_service/README.md's block, from the repository's root, with `$AT`
    from a login as in the walk-through (its ports swapped for free ones)."""
    import httpx

    from tests.e2e.processes import free_port

    readme = (README.parent / "examples" / "resource_service" / "README.md").read_text()
    match = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert match
    block = match.group(1)
    assert "$AT" in block
    with running_server(tmp_path / "server", env={"AUTHSVC_COOKIE_SECURE": "false"}) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            user = {"username": "walker", "password": "correct horse battery staple"}
            assert http.post("/register", json=user).status_code == 201
            access = http.post("/login", json=user).json()["access_token"]
        host = server.url.removeprefix("http://")
        script = block.replace("127.0.0.1:8000", host).replace("9000", str(free_port()))
        done = subprocess.run(
            ["bash", "-e", "-c", "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script],
            cwd=README.parent,
            env=clean_env({"AT": access, "PATH": os.environ["PATH"]}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"message":"hello"' in done.stdout, done.stdout + done.stderr
