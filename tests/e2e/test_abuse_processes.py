"""Abuse resistance of the real ``authsvc`` processes: the login throttle shared by two
workers (database and Redis), production refusing unsafe settings, response headers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authsvc.security.keys import private_key_pem
from tests.conftest import PASSWORD, unique_username
from tests.e2e.processes import FAST_HASH_ENV, free_port, run_cli, running_server
from tests.redis_support import REDIS_URL, require_redis

pytestmark = pytest.mark.slow


def fresh_post(url: str, path: str, body: dict[str, str]) -> httpx.Response:
    # A new connection per request, so the kernel spreads them over both workers.
    with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
        return client.post(url + path, json=body)


@pytest.mark.parametrize("store", ["database", "redis"])
def test_throttle_holds_across_two_workers(
    database_url: str, clean_db: object, tmp_path: Path, store: str, redis_key_prefix: str
) -> None:
    env = {
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_ENV": "development",
        **FAST_HASH_ENV,
    }
    if store == "redis":
        require_redis()
        env |= {
            "AUTHSVC_REDIS_URL": REDIS_URL,
            "AUTHSVC_REDIS_KEY_PREFIX": redis_key_prefix,
        }
    with running_server(tmp_path, env=env, args=["--workers", "2"]) as server:
        url = server.url
        username = unique_username()
        body = {"username": username, "password": PASSWORD}
        assert fresh_post(url, "/register", body).status_code == 201
        for _ in range(5):
            wrong = fresh_post(url, "/login", {"username": username, "password": "wrong password!"})
            assert wrong.status_code == 401
            assert wrong.json()["error"] == "invalid_credentials"
        for _ in range(4):  # whichever worker answers
            throttled = fresh_post(url, "/login", body)
            assert throttled.status_code == 429, throttled.text
            assert throttled.json()["error"] == "too_many_attempts"
            assert 1 <= int(throttled.headers["Retry-After"]) <= 300

        # A concurrent burst against another account: never a 5xx, and throttled after.
        other = unique_username()
        assert (
            fresh_post(url, "/register", {"username": other, "password": PASSWORD}).status_code
            == 201
        )
        with ThreadPoolExecutor(8) as pool:
            burst = list(
                pool.map(
                    lambda _: fresh_post(
                        url, "/login", {"username": other, "password": "wrong password!"}
                    ),
                    range(24),
                )
            )
        statuses = [r.status_code for r in burst]
        print(
            f"burst of 24 concurrent failures ({store}): "
            f"{statuses.count(401)} x 401, {statuses.count(429)} x 429"
        )
        assert set(statuses) <= {401, 429}, statuses
        assert (
            fresh_post(url, "/login", {"username": other, "password": PASSWORD}).status_code == 429
        )
        # Other usernames are not affected.
        third = unique_username()
        assert (
            fresh_post(url, "/register", {"username": third, "password": PASSWORD}).status_code
            == 201
        )
        assert (
            fresh_post(url, "/login", {"username": third, "password": PASSWORD}).status_code == 200
        )


def test_security_headers_on_the_real_server(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, env=FAST_HASH_ENV) as server,
        httpx.Client(timeout=30) as client,
    ):
        url = server.url
        for method, path, content in [
            ("GET", "/.well-known/jwks.json", None),
            ("GET", "/me", None),
            ("GET", "/no-such-page", None),
            ("POST", "/login", None),
            ("POST", "/login", b"x" * 70_000),  # 413 from the body-size middleware
            ("DELETE", "/login", None),  # 405
            ("GET", "/openapi.json", None),
            ("GET", "/docs", None),
        ]:
            response = client.request(method, url + path, content=content)
            assert response.headers.get("x-content-type-options") == "nosniff", path
            assert "server" not in response.headers, (path, response.headers.get("server"))
            assert response.status_code < 500


def write_key(tmp_path: Path) -> Path:
    key_file = tmp_path / "signing-key.pem"
    key_file.write_bytes(private_key_pem(ec.generate_private_key(ec.SECP256R1())))
    return key_file


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("case", "env", "reason"),
    [
        ("no-key", {}, "AUTHSVC_JWT_PRIVATE_KEY_FILE"),
        ("hs256-no-secret", {"AUTHSVC_JWT_ALGORITHM": "HS256"}, "AUTHSVC_JWT_SECRET"),
        (
            "hs256-short-secret",
            {"AUTHSVC_JWT_ALGORITHM": "HS256", "AUTHSVC_JWT_SECRET": "x" * 31},
            "at least 32 bytes",
        ),
        (
            "cookie-not-secure",
            {"AUTHSVC_COOKIE_SECURE": "false", "KEY": "1"},
            "AUTHSVC_COOKIE_SECURE",
        ),
        (
            "hs256-cookie-not-secure",
            {
                "AUTHSVC_JWT_ALGORITHM": "HS256",
                "AUTHSVC_JWT_SECRET": "s" * 32,
                "AUTHSVC_COOKIE_SECURE": "0",
            },
            "AUTHSVC_COOKIE_SECURE",
        ),
        ("issuer-not-https", {"KEY": "1", "AUTHSVC_ISSUER": "authsvc"}, "AUTHSVC_ISSUER"),
        (
            "issuer-plain-http",
            {"KEY": "1", "AUTHSVC_ISSUER": "http://auth.example.com"},
            "https URL",
        ),
    ],
)
def test_production_refuses_unsafe_settings(
    tmp_path: Path, command: str, case: str, env: dict[str, str], reason: str
) -> None:
    env = {
        "AUTHSVC_ISSUER": "https://auth.example.com",
        **env,
        "AUTHSVC_ENV": "production",
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/a.db",
    }
    if env.pop("KEY", None):
        env["AUTHSVC_JWT_PRIVATE_KEY_FILE"] = str(write_key(tmp_path))
    args = ["--port", str(free_port())] if command == "serve" else []
    result = run_cli(tmp_path, command, *args, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authsvc: error:"), lines
    assert reason in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing was generated or migrated.
    assert not (tmp_path / "var").exists()
    assert not (tmp_path / "a.db").exists()


def test_production_starts_with_safe_settings(tmp_path: Path) -> None:
    env = {
        "AUTHSVC_ENV": "production",
        "AUTHSVC_ISSUER": "https://auth.example.com",
        "AUTHSVC_JWT_PRIVATE_KEY_FILE": str(write_key(tmp_path)),
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/a.db",
        **FAST_HASH_ENV,
    }
    migrated = run_cli(tmp_path, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with running_server(tmp_path, env=env) as server:
        url = server.url
        username = unique_username()
        assert (
            fresh_post(url, "/register", {"username": username, "password": PASSWORD}).status_code
            == 201
        )
        response = fresh_post(
            url, "/login?transport=cookie", {"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200
        assert "secure" in response.headers["set-cookie"].lower()
    assert not (tmp_path / "var").exists()  # no development key was generated


def test_malformed_redis_url_is_a_one_line_refusal(tmp_path: Path) -> None:
    env = {
        "AUTHSVC_REDIS_URL": "http://127.0.0.1:6379",
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/a.db",
    }
    result = run_cli(tmp_path, "serve", "--port", str(free_port()), env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTHSVC_REDIS_URL" in lines[0]
