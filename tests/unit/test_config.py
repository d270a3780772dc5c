from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from authsvc.config import OperationsSettings, Settings
from authsvc.security.keys import (
    SigningKey,
    development_key_path,
    generate_private_key,
    load_signing_key,
    private_key_pem,
)


def make(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_match_the_contract() -> None:
    s = make()
    assert s.database.database_url == "sqlite+aiosqlite:///./var/authsvc.db"
    assert s.operations.env == "development"
    t = s.tokens
    assert (t.access_token_ttl_seconds, t.refresh_token_ttl_seconds) == (1800, 3600)
    assert t.session_max_lifetime_seconds == 43200
    assert (t.refresh_reuse_grace_seconds, t.clock_skew_seconds) == (0, 0)
    assert t.jwt_algorithm == "ES256"
    assert (t.issuer, t.audience) == ("authsvc", "authsvc")
    th = s.throttle
    assert (th.login_max_attempts, th.login_window_seconds) == (5, 300)
    assert th.login_max_attempts_per_address == 100
    assert (th.login_account_max_failures, th.login_account_window_seconds) == (100, 86400)
    assert th.login_known_address_days == 30
    assert (th.register_max_per_address, th.register_window_seconds) == (20, 3600)
    assert s.clients.allow_registration is True
    assert s.clients.cookie_secure is True
    assert s.passwords.password_min_length == 12
    assert s.passwords.password_hash_queue_max == 32
    p = s.passwords
    assert (p.argon2_memory_cost, p.argon2_time_cost, p.argon2_parallelism) == (19456, 2, 1)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_CORS_ORIGINS", "https://a.example, https://b.example/")
    monkeypatch.setenv("AUTHSVC_INTROSPECTION_CLIENTS", "svc:secret1,other:secret2")
    monkeypatch.setenv("AUTHSVC_ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("AUTHSVC_TRUSTED_PROXIES", "10.0.0.1,")
    s = make()
    assert s.clients.cors_origins == ["https://a.example", "https://b.example"]
    assert s.clients.introspection_clients == ["svc:secret1", "other:secret2"]
    assert s.tokens.access_token_ttl_seconds == 60
    assert s.operations.trusted_proxies == ["10.0.0.1"]


def test_dotenv_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "AUTHSVC_LOGIN_MAX_ATTEMPTS=7\nAUTHSVC_DB_POOL_SIZE=3\nOTHER_TOOL_SETTING=x\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTHSVC_DB_POOL_SIZE", "4")
    s = Settings()
    assert s.throttle.login_max_attempts == 7
    assert s.database.db_pool_size == 4
    # ``_env_file=None`` (what the suite passes) reads no file at all.
    assert make().throttle.login_max_attempts == 5


def test_an_invalid_variable_is_reported_at_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_DB_POOL_SIZE", "0")
    with pytest.raises(ValidationError) as caught:
        make()
    # The CLI names the variable from this location (AUTHSVC_ + loc).
    assert caught.value.errors()[0]["loc"] == ("db_pool_size",)


def test_flat_overrides_reach_their_group_and_unknown_ones_are_refused() -> None:
    s = make(redis_key_prefix="t", log_level="debug")
    assert (s.throttle.redis_key_prefix, s.operations.log_level) == ("t", "debug")
    given = OperationsSettings(_env_file=None, env="test")  # type: ignore[call-arg]
    assert make(operations=given).operations is given
    with pytest.raises(TypeError, match="redis_prefix"):
        make(redis_prefix="t")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"env": "production"}, "AUTHSVC_JWT_PRIVATE_KEY_FILE"),
        ({"env": "production", "jwt_algorithm": "HS256"}, "AUTHSVC_JWT_SECRET"),
        ({"jwt_algorithm": "HS256", "jwt_secret": "too-short"}, "at least 32 bytes"),
        (
            {
                "env": "production",
                "jwt_private_key_file": Path("k.pem"),
                "issuer": "https://auth.example.com",
                "cookie_secure": False,
            },
            "AUTHSVC_COOKIE_SECURE",
        ),
        ({"login_account_max_failures": 101}, "less than or equal to 100"),
        ({"redis_url": "http://cache:6379"}, "redis://"),
    ],
)
def test_unsafe_configurations_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**values)


PRODUCTION = {
    "env": "production",
    "jwt_private_key_file": Path("k.pem"),
    "issuer": "https://auth.example.com",
}


def test_production_with_a_key_and_an_https_issuer_is_accepted() -> None:
    assert make(**PRODUCTION).operations.env == "production"
    assert make(**{**PRODUCTION, "issuer": "https://example.com/tenant/1"}).tokens.issuer.endswith(
        "/1"
    )


@pytest.mark.parametrize(
    "issuer",
    ["authsvc", "http://auth.example.com", "https://", "https://a.example?x=1", "https://a#f"],
)
def test_production_refuses_an_issuer_that_is_not_an_https_url(issuer: str) -> None:
    with pytest.raises(ValidationError, match="AUTHSVC_ISSUER to be an https URL"):
        make(**{**PRODUCTION, "issuer": issuer})
    assert make(issuer=issuer).tokens.issuer == issuer  # development takes any issuer


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/authsvc", "postgresql+asyncpg://u:p@db:5432/authsvc"),
        ("postgres://u@db/authsvc?ssl=require", "postgresql+asyncpg://u@db/authsvc?ssl=require"),
        ("postgresql+asyncpg://u@db/authsvc", "postgresql+asyncpg://u@db/authsvc"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite+aiosqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_plain_database_urls_mean_the_async_drivers(given: str, used: str) -> None:
    assert make(database_url=given).database.database_url == used


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose.yml passes every setting through as ${AUTHSVC_<NAME>:-}: unset arrives empty.
    for name in ("PUBLIC_URL", "JWT_SECRET", "ACCESS_TOKEN_TTL_SECONDS", "ALLOW_REGISTRATION"):
        monkeypatch.setenv(f"AUTHSVC_{name}", "")
    s = make()
    assert s.operations.public_url is None
    assert s.tokens.jwt_secret is None
    assert s.tokens.access_token_ttl_seconds == 1800
    assert s.clients.allow_registration is True


def test_production_signs_with_the_configured_key_and_generates_none(tmp_path: Path) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(private_key_pem(generate_private_key("ES256")))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    s = make(**{**PRODUCTION, "jwt_private_key_file": key_file, "data_dir": data_dir})
    key = load_signing_key(s)
    assert key.kid == load_signing_key(make(jwt_private_key_file=key_file)).kid
    assert not development_key_path(s).exists()
    assert list(data_dir.iterdir()) == []


def test_development_generates_one_key_and_reuses_it(tmp_path: Path) -> None:
    s = make(data_dir=tmp_path)
    first: SigningKey = load_signing_key(s)
    assert development_key_path(s).exists()
    assert load_signing_key(make(data_dir=tmp_path)).kid == first.kid
