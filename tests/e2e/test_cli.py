"""``authsvc create-user`` as an operator runs it, then a login on the real server."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, bearer
from tests.e2e.conftest import ServerFactory
from tests.e2e.processes import run_cli

pytestmark = pytest.mark.slow


def test_create_user_then_login(run_server: ServerFactory, tmp_path: Path) -> None:
    created = run_cli(tmp_path, "create-user", "Alice", "--password-stdin", input=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert "alice" in created.stdout
    assert PASSWORD not in created.stdout + created.stderr

    server = run_server(env={})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post("/login", json={"username": "ALICE", "password": PASSWORD})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        me = http.get("/me", headers=bearer(token))
        assert me.status_code == 200
        assert me.json()["username"] == "alice"


@pytest.mark.parametrize(
    ("username", "password", "expected"),
    [
        ("b!", PASSWORD, "username"),
        ("ab", PASSWORD, "username"),
        ("x" * 65, PASSWORD, "username"),
        ("bob", "short", "at least 12"),
        ("bob", "x" * 129, "at most 128"),
        ("bob_the_builder", "my bob_the_builder pass", "username"),
        ("bob", "", "password"),
    ],
    ids=["bad-char", "too-short", "too-long", "short-pw", "long-pw", "pw-has-username", "no-pw"],
)
def test_create_user_refuses_bad_input_in_one_line(
    tmp_path: Path, username: str, password: str, expected: str
) -> None:
    result = run_cli(tmp_path, "create-user", username, "--password-stdin", input=password + "\n")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    if password:
        assert password not in result.stderr + result.stdout


def test_create_user_twice_is_refused_in_one_line(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "create-user", "carol", "--password-stdin", input=PASSWORD + "\n")
    assert first.returncode == 0, first.stderr
    # Usernames are case-insensitive: CAROL is carol.
    again = run_cli(tmp_path, "create-user", "CAROL", "--password-stdin", input=PASSWORD + "\n")
    assert again.returncode != 0
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, again.stderr
    assert "already" in lines[0]


def test_authsvc_alone_shows_the_usage_not_an_error(tmp_path: Path) -> None:
    result = run_cli(tmp_path)
    assert result.stderr.startswith("Usage: authsvc")
    assert "error" not in result.stderr.splitlines()[0]
    for command in ("serve", "migrate", "create-user"):
        assert command in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nosuch"], "No such command"),
        (["serve", "--workers", "0"], "--workers"),
        (["serve", "--port", "70000"], "--port"),
        (["create-user"], "USERNAME"),
        (["disable-user", "nobody_here"], "no database at"),
    ],
    ids=["unknown-command", "workers-0", "port-out-of-range", "no-username", "no-database"],
)
def test_bad_command_lines_get_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli(tmp_path, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authsvc: error: ")
    assert expected in lines[0]


def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(tmp_path, "serve", "--port", str(port), timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"authsvc: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
