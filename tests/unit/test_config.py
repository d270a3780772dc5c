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
            {"env": "production", "jwt_private_key_file": Path("k.pem"), "cookie_secure": False},
            "AUTHSVC_COOKIE_SECURE",
        ),
    ],
)
def test_unsafe_configurations_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**values)


def test_production_with_a_key_is_accepted() -> None:
    assert make(env="production", jwt_private_key_file=Path("k.pem")).env == "production"
