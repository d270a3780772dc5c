"""``authsvc serve`` as users run it: a real process, real HTTP, its own working directory."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import PASSWORD, unique_username
from tests.e2e.conftest import ServerFactory
from tests.e2e.processes import free_port, run_cli

pytestmark = pytest.mark.slow

PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_and_login(
    http: httpx.Client, username: str | None = None
) -> tuple[str, dict[str, Any]]:
    username = username or unique_username()
    registered = http.post("/register", json={"username": username, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    logged_in = http.post("/login", json={"username": username, "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.headers["cache-control"] == "no-store"
    return username, logged_in.json()


def test_serve_with_no_configuration_generates_and_reuses_its_key(
    run_server: ServerFactory, tmp_path: Path
) -> None:
    # No AUTHSVC_* variable at all, default argon2 parameters: what a new user gets.
    server = run_server(env={})
    assert (tmp_path / "var" / "authsvc.db").is_file()
    key_files = sorted(p.name for p in (tmp_path / "var").glob("jwt-*"))
    assert key_files == ["jwt-es256.pem"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        keys = http.get("/.well-known/jwks.json").json()["keys"]
        assert len(keys) == 1
        assert keys[0]["alg"] == "ES256"
        assert keys[0]["use"] == "sig"
        assert not PRIVATE_JWK_MEMBERS & keys[0].keys()
        kid = keys[0]["kid"]
        username, pair = register_and_login(http)
        assert header_of(pair["access_token"])["kid"] == kid
    server.stop()
    assert server.stopped_cleanly(), server.output()

    again = run_server(env={})
    with httpx.Client(base_url=again.url, timeout=30) as http:
        assert [k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]] == [kid]
        # The same key and the same database: the old access token and the user survive.
        me = http.get("/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["username"] == username
        relogin = http.post("/login", json={"username": username, "password": PASSWORD})
        assert relogin.status_code == 200
    assert sorted(p.name for p in (tmp_path / "var").glob("jwt-*")) == key_files
    assert "Traceback" not in server.output() + again.output()


def test_instances_starting_together_on_a_fresh_directory_share_one_key(
    run_server: ServerFactory, tmp_path: Path
) -> None:
    # Three at once on nothing: one schema migration wins, the others wait for it; one key
    # file is created and every instance signs with it.
    servers = [run_server(env={}, wait=False) for _ in range(3)]
    for server in servers:
        server.wait_ready()
    assert len(list((tmp_path / "var").glob("jwt-*"))) == 1
    kids = set()
    username = unique_username()
    with httpx.Client(timeout=30) as http:
        for i, server in enumerate(servers):
            kids |= {
                k["kid"] for k in http.get(f"{server.url}/.well-known/jwks.json").json()["keys"]
            }
            if i == 0:
                body = {"username": username, "password": PASSWORD}
                assert http.post(f"{server.url}/register", json=body).status_code == 201
            # One database: the user registered on the first instance logs in on each.
            login = http.post(
                f"{server.url}/login", json={"username": username, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
    assert len(kids) == 1


def test_seed_flow_over_real_http(run_server: ServerFactory, tmp_path: Path) -> None:
    """Register, login, /me, refresh, reuse 403; then, with 1 s access tokens, expiry 401."""
    server = run_server(env={})
    issued: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        username, pair = register_and_login(http)
        issued += [pair["access_token"], pair["refresh_token"]]
        me = http.get("/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        assert me.json()["username"] == username

        rotated = http.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        new = rotated.json()
        issued += [new["access_token"], new["refresh_token"]]
        assert new["refresh_token"] != pair["refresh_token"]
        assert http.get("/me", headers=bearer(new["access_token"])).status_code == 200

        reused = http.post("/generateTokens", json={"refresh_token": pair["refresh_token"]})
        assert reused.status_code == 403
        assert reused.json()["error"] == "refresh_token_reused"
        newest = http.post("/refresh", json={"refresh_token": new["refresh_token"]})
        assert newest.status_code == 403
        assert newest.json()["error"] == "refresh_token_revoked"
    server.stop()

    # The same directory (database and key) with short access tokens: the expiry step. A
    # 1 s token can expire before the first /me, so this half starts from the expired token.
    short = run_server(env={"AUTHSVC_ACCESS_TOKEN_TTL_SECONDS": "1"})
    with httpx.Client(base_url=short.url, timeout=30) as http:
        logged_in = http.post("/login", json={"username": username, "password": PASSWORD})
        assert logged_in.status_code == 200
        pair = logged_in.json()
        issued += [pair["access_token"], pair["refresh_token"]]
        assert pair["expires_in"] <= 1
        time.sleep(2.2)
        expired = http.get("/me", headers=bearer(pair["access_token"]))
        assert expired.status_code == 401
        assert expired.json()["error"] == "token_expired"
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]

        rotated = http.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200, rotated.text
        reused = http.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reused.status_code == 403
        assert reused.json()["error"] == "refresh_token_reused"
    short.stop()
    logs = server.output() + short.output()
    assert "Traceback" not in logs
    # No secret reaches the log (docs/observability.md): neither the password nor any token.
    secrets_seen = [PASSWORD, *issued]
    assert not [s for s in secrets_seen if s in logs]


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "HS256"])
def test_each_algorithm_serves_login_me_and_refresh(
    run_server: ServerFactory, algorithm: str
) -> None:
    env = {"AUTHSVC_JWT_ALGORITHM": algorithm}
    if algorithm == "HS256":
        env["AUTHSVC_JWT_SECRET"] = secrets.token_urlsafe(48)
    server = run_server(env=env)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        keys = http.get("/.well-known/jwks.json").json()["keys"]
        _, pair = register_and_login(http)
        header = header_of(pair["access_token"])
        assert header["alg"] == algorithm
        assert header["typ"] == "at+jwt"
        if algorithm == "HS256":
            assert keys == []
        else:
            assert len(keys) == 1
            assert keys[0]["alg"] == algorithm
            assert keys[0]["kid"] == header["kid"]
            assert not PRIVATE_JWK_MEMBERS & keys[0].keys()
            # What another service does: verify with the published key alone.
            claims = jwt.decode(
                pair["access_token"],
                key=jwt.PyJWK(keys[0]),
                algorithms=[algorithm],
                audience="authsvc",
                issuer="authsvc",
            )
            assert claims["sid"]
        assert http.get("/me", headers=bearer(pair["access_token"])).status_code == 200
        rotated = http.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()
        assert http.get("/me", headers=bearer(new["access_token"])).status_code == 200
        again = http.post("/refresh", json={"refresh_token": new["refresh_token"]})
        assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"AUTHSVC_ENV": "production"}, "AUTHSVC_JWT_PRIVATE_KEY_FILE"),
        ({"AUTHSVC_ENV": "production", "AUTHSVC_JWT_ALGORITHM": "HS256"}, "AUTHSVC_JWT_SECRET"),
        ({"AUTHSVC_JWT_ALGORITHM": "HS256", "AUTHSVC_JWT_SECRET": "x" * 31}, "AUTHSVC_JWT_SECRET"),
    ],
    ids=["production-no-key", "production-hs256-no-secret", "short-hs256-secret"],
)
def test_serve_refuses_to_start_without_a_usable_key(
    tmp_path: Path, env: dict[str, str], names: str
) -> None:
    result = run_cli(tmp_path, "serve", "--port", str(free_port()), env=env, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
    assert result.stdout == ""
    # Nothing was generated in place of the missing key.
    assert not list(tmp_path.glob("var/jwt-*"))


def test_python_dash_m_help(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help", module=True)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "create-user"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AUTHSVC_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/x"}, "migration"),
        ({"AUTHSVC_JWT_PRIVATE_KEY_FILE": "garbage.pem"}, "garbage.pem"),
        ({"AUTHSVC_JWT_PRIVATE_KEY_FILE": "missing.pem"}, "missing.pem"),
        ({"AUTHSVC_ACCESS_TOKEN_TTL_SECONDS": "soon"}, "AUTHSVC_ACCESS_TOKEN_TTL_SECONDS"),
        ({"AUTHSVC_JWT_ALGORITHM": "HS512"}, "AUTHSVC_JWT_ALGORITHM"),
    ],
    ids=["database-unreachable", "key-not-pem", "key-missing", "ttl-not-a-number", "bad-alg"],
)
def test_serve_refuses_bad_configuration_in_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    (tmp_path / "garbage.pem").write_text("not a key\n")
    result = run_cli(tmp_path, "serve", "--port", str(free_port()), env=env, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
