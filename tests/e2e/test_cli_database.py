"""Which database the command line acts on: it says so, and its admin commands never
create one (a relative SQLite path lands wherever the command runs)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PASSWORD
from tests.e2e.conftest import POSTGRES_ONLY
from tests.e2e.processes import authsvc_command, clean_env, cli_env, run_cli, running_server

pytestmark = pytest.mark.slow

ADMIN_COMMANDS = [
    ["disable-user", "zed"],
    ["enable-user", "zed"],
    ["audit"],
    ["audit", "--user", "zed"],
    ["purge"],
]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "Warning" not in stderr
    return lines[0]


@pytest.mark.parametrize("args", ADMIN_COMMANDS, ids=lambda a: " ".join(a))
def test_admin_commands_refuse_a_missing_sqlite_database_and_create_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    result = run_cli(tmp_path, *args)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("authsvc: error: no database at ")
    assert str(tmp_path / "var" / "authsvc.db") in line
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no database, no development key


@POSTGRES_ONLY
@pytest.mark.parametrize("args", [["purge"], ["disable-user", "zed"], ["migrate"]])
def test_commands_refuse_a_postgres_database_that_does_not_exist(
    tmp_path: Path, postgres_url: str, args: list[str]
) -> None:
    missing = make_url(postgres_url).set(database=f"authsvc_missing_{uuid.uuid4().hex[:12]}")
    url = missing.render_as_string(hide_password=False)
    result = run_cli(tmp_path, *args, env=cli_env(url, tmp_path / "keys"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"authsvc: error: no database at {missing.render_as_string()}")


def test_create_user_says_which_database_and_leaves_no_key_behind(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "create-user", "zed", "--password-stdin", input=PASSWORD + "\n")
    assert first.returncode == 0, first.stderr
    database = tmp_path / "var" / "authsvc.db"
    assert first.stdout.startswith("created user zed (")
    assert first.stdout.strip().endswith(f"in {database}, a new database")
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["authsvc.db"]

    again = run_cli(tmp_path, "create-user", "amy", "--password-stdin", input=PASSWORD + "\n")
    assert again.stdout.strip().endswith(f"in {database}")
    disabled = run_cli(tmp_path, "disable-user", "zed")
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == f"disabled zed in {database}; revoked 0 session(s)"
    purged = run_cli(tmp_path, "purge")
    assert purged.stdout.strip().endswith(f"from {database}")


def test_audit_of_an_unknown_user_is_a_refusal(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "create-user", "zed", "--password-stdin", input=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    result = run_cli(tmp_path, "audit", "--user", "nosuchuser")
    assert result.returncode == 1
    database = tmp_path / "var" / "authsvc.db"
    assert one_line(result.stderr) == f"authsvc: error: no such user: nosuchuser (in {database})"
    assert result.stdout == ""
    known = run_cli(tmp_path, "audit", "--user", "zed")
    assert known.returncode == 0, known.stderr
    assert known.stderr.strip().endswith(f"event(s) from {database}")


def test_create_user_without_a_terminal_points_to_password_stdin(tmp_path: Path) -> None:
    # A new session has no controlling terminal: what a cron job or a CI step gets.
    result = subprocess.run(
        [*authsvc_command(), "create-user", "zed"],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("authsvc: error: ")
    assert "--password-stdin" in line
    assert not (tmp_path / "var").exists()


def test_serve_says_where_its_database_key_and_docs_are(tmp_path: Path) -> None:
    env = {"AUTHSVC_LOG_FORMAT": "text", "AUTHSVC_COOKIE_SECURE": "false"}
    with running_server(tmp_path, env=env) as server:
        output = server.output()
    var = tmp_path / "var"
    assert f"database created: {var / 'authsvc.db'}" in output
    assert f"development signing key generated: {var / 'jwt-es256.pem'}" in output
    assert f"docs page: {server.url}/docs" in output
    assert os.path.exists(var / "jwt-es256.pem")
