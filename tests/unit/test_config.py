from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from authsvc.config import Settings


def make(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_match_the_contract() -> None:
    s = make()
    assert s.database_url == "sqlite+aiosqlite:///./var/authsvc.db"
    assert (s.access_token_ttl_seconds, s.refresh_token_ttl_seconds) == (1800, 3600)
    assert s.session_max_lifetime_seconds == 43200
    assert s.refresh_reuse_grace_seconds == 0
    assert s.jwt_algorithm == "ES256"
    assert (s.issuer, s.audience) == ("authsvc", "authsvc")
    assert (s.login_max_attempts, s.login_window_seconds, s.login_max_attempts_per_address) == (
        5,
        300,
        100,
    )
    assert s.cookie_secure is True
    assert s.password_min_length == 12
    assert (s.argon2_memory_cost, s.argon2_time_cost, s.argon2_parallelism) == (19456, 2, 1)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_CORS_ORIGINS", "https://a.example, https://b.example/")
    monkeypatch.setenv("AUTHSVC_INTROSPECTION_CLIENTS", "svc:secret1,other:secret2")
    monkeypatch.setenv("AUTHSVC_ACCESS_TOKEN_TTL_SECONDS", "60")
    s = make()
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.introspection_clients == ["svc:secret1", "other:secret2"]
    assert s.access_token_ttl_seconds == 60


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
    assert make(**PRODUCTION).env == "production"
    assert make(**{**PRODUCTION, "issuer": "https://example.com/tenant/1"}).issuer.endswith("/1")


@pytest.mark.parametrize(
    "issuer",
    ["authsvc", "http://auth.example.com", "https://", "https://a.example?x=1", "https://a#f"],
)
def test_production_refuses_an_issuer_that_is_not_an_https_url(issuer: str) -> None:
    with pytest.raises(ValidationError, match="AUTHSVC_ISSUER to be an https URL"):
        make(**{**PRODUCTION, "issuer": issuer})
    assert make(issuer=issuer).issuer == issuer  # development takes any issuer


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
    assert make(database_url=given).database_url == used


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose.yml passes every setting through as ${AUTHSVC_X:-}: unset arrives empty.
    for name in ("PUBLIC_URL", "JWT_SECRET", "ACCESS_TOKEN_TTL_SECONDS", "ALLOW_REGISTRATION"):
        monkeypatch.setenv(f"AUTHSVC_{name}", "")
    s = make()
    assert s.public_url is None
    assert s.jwt_secret is None
    assert s.access_token_ttl_seconds == 1800
    assert s.allow_registration is True
