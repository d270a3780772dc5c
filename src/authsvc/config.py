"""Settings, read once from the environment (``AUTHSVC_*``) and ``.env``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Algorithm = Literal["ES256", "EdDSA", "RS256", "HS256"]
CommaList = Annotated[list[str], NoDecode]

MIN_HMAC_SECRET_BYTES = 32


class Settings(BaseSettings):
    """Every knob of the service; the names and defaults are documented (README,
    *Configuration*) and deployments depend on them."""

    model_config = SettingsConfigDict(
        env_prefix="AUTHSVC_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./var/authsvc.db"

    access_token_ttl_seconds: int = Field(1800, gt=0)
    refresh_token_ttl_seconds: int = Field(3600, gt=0)
    session_max_lifetime_seconds: int = Field(43200, gt=0)
    refresh_reuse_grace_seconds: int = Field(0, ge=0)
    clock_skew_seconds: int = Field(0, ge=0)

    jwt_algorithm: Algorithm = "ES256"
    jwt_private_key_file: Path | None = None
    jwt_secret: SecretStr | None = None
    # Key rotation: PEM private keys that signed before the current one. Their public keys stay
    # in the JWKS and tokens they signed (access and refresh) stay valid by ``kid``.
    jwt_previous_key_files: CommaList = []
    issuer: str = "authsvc"
    audience: str = "authsvc"
    # Where development keys are generated (and other local state lives).
    data_dir: Path = Path("var")

    allow_registration: bool = True
    login_max_attempts: int = Field(5, gt=0)
    login_window_seconds: int = Field(300, gt=0)
    login_max_attempts_per_address: int = Field(100, gt=0)
    # NIST SP 800-63B §5.2.2: at most 100 consecutive failures per account, from all
    # addresses together; a successful login resets it, else failures age out of this window.
    login_account_max_failures: int = Field(100, gt=0, le=100)
    login_account_window_seconds: int = Field(86400, gt=0)
    # The account cap does not apply from an address (IPv6: its /64) the account logged in
    # from successfully within this many days (NIST SP 800-63B §5.2.2: the cap must not
    # become a way to lock the owner out).
    login_known_address_days: int = Field(30, ge=0)
    register_max_per_address: int = Field(20, gt=0)
    register_window_seconds: int = Field(3600, gt=0)
    cors_origins: CommaList = []
    cookie_secure: bool = True
    password_min_length: int = Field(12, ge=1, le=128)
    introspection_clients: CommaList = []
    public_url: str | None = None
    redis_url: str | None = None
    # Prefix of every Redis key (instances sharing a Redis for different services differ).
    redis_key_prefix: str = "authsvc"
    trusted_proxies: CommaList = []
    # Seconds between background purges of records nobody needs any more; 0 disables them.
    purge_interval_seconds: float = Field(3600, ge=0)
    purge_batch_size: int = Field(500, ge=1, le=10000)

    # argon2id cost; the defaults are OWASP's minimum (19 MiB, t=2, p=1).
    argon2_memory_cost: int = Field(19456, ge=8)
    argon2_time_cost: int = Field(2, ge=1)
    argon2_parallelism: int = Field(1, ge=1)
    # How many hashes may run at once (each holds its memory cost).
    password_hash_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)
    # How many requests may wait for a hashing slot in one worker; beyond it, 503 at once.
    password_hash_queue_max: int = Field(32, ge=0)

    db_pool_size: int = Field(10, ge=1)
    # No overflow by default: connections opened and closed again at every burst cost
    # PostgreSQL a backend each and, measured under W1 load, cost throughput and errors.
    db_max_overflow: int = Field(0, ge=0)
    # A dead or hung database must give 503 within 5 s (README, *Configuration*). The worst
    # chain on a hung one is a wait for a pooled connection, its ping (db.install_checkout_check)
    # or first statement timing out, and its quick close (db.QuickCloseConnection):
    # 1 + 2 + 0.5 s. Measured by tests/e2e/test_database_outage.
    db_connect_timeout_seconds: float = Field(2.0, gt=0)
    db_pool_timeout_seconds: float = Field(1.0, gt=0)
    db_statement_timeout_seconds: float = Field(2.0, gt=0)
    # Behind PgBouncer in transaction mode: no prepared-statement caches, unique statement
    # names, no session settings at startup (set statement_timeout on the role instead).
    db_pgbouncer: bool = False

    # "auto": readable lines on a terminal, JSON lines otherwise.
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator(
        "cors_origins",
        "introspection_clients",
        "trusted_proxies",
        "jwt_previous_key_files",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _strip_trailing_slash(cls, value: list[str]) -> list[str]:
        return [origin.rstrip("/") for origin in value]

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        schemes = ("redis://", "rediss://", "redis+unix://", "valkey://", "valkeys://")
        if value is not None and not value.removeprefix("async+").startswith(schemes):
            raise ValueError("must be a redis://, rediss:// or redis+unix:// URL")
        return value

    @model_validator(mode="after")
    def _enforce_safe_keys(self) -> Self:
        secret = self.jwt_secret.get_secret_value().encode() if self.jwt_secret else None
        if self.jwt_algorithm == "HS256":
            if secret is not None and len(secret) < MIN_HMAC_SECRET_BYTES:
                raise ValueError(
                    f"AUTHSVC_JWT_SECRET must be at least {MIN_HMAC_SECRET_BYTES} bytes for HS256"
                )
            if self.env == "production" and secret is None:
                raise ValueError("AUTHSVC_ENV=production with HS256 requires AUTHSVC_JWT_SECRET")
        elif self.env == "production" and self.jwt_private_key_file is None:
            raise ValueError(
                "AUTHSVC_ENV=production requires AUTHSVC_JWT_PRIVATE_KEY_FILE "
                f"(a PEM private key for {self.jwt_algorithm})"
            )
        if self.env == "production" and not self.cookie_secure:
            raise ValueError("AUTHSVC_ENV=production refuses AUTHSVC_COOKIE_SECURE=false")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
