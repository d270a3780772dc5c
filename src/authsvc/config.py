"""Settings, read once from the environment (``AUTHSVC_*``) and ``.env``.

The knobs are grouped by concern, so ``Settings`` reads as a map of the service::

    settings.database.db_pool_size        AUTHSVC_DB_POOL_SIZE
    settings.tokens.access_token_ttl_seconds  AUTHSVC_ACCESS_TOKEN_TTL_SECONDS

How it is built, and why:

- Each group is its own ``BaseSettings`` with the ``AUTHSVC_`` prefix, so it reads its own
  variables from the environment and ``.env`` with pydantic-settings' ordinary sources. A
  field keeps the name of its variable (``AUTHSVC_`` + the field name in upper case): the
  variable names are a public contract (README, docs/configuration.md), and one grep finds
  both. No nested-delimiter names are introduced.
- ``Settings`` composes the groups. Its constructor also takes the flat overrides tests and
  tools pass (``Settings(env="test", access_token_ttl_seconds=5, _env_file=None)``) and hands
  each to the group that owns it; an override no group owns is an error, not ignored. Source
  options such as ``_env_file`` go to every group. Errors in one group's variables come out
  as that group's ``ValidationError``, located at the field (``AUTHSVC_`` + ``loc`` names the
  variable, which the CLI prints).
- Rules across groups (production refusals, the HS256 secret length) are validators on
  ``Settings``.
- Every field has a ``description``: docs/configuration.md is generated from them
  (``python -m authsvc.config_docs``), and a test fails when that file is stale.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Algorithm = Literal["ES256", "EdDSA", "RS256", "HS256"]
CommaList = Annotated[list[str], NoDecode]

ENV_PREFIX = "AUTHSVC_"
MIN_HMAC_SECRET_BYTES = 32


def split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class _Group(BaseSettings):
    """One group of settings: reads its own ``AUTHSVC_*`` variables and ``.env``."""

    # An empty variable means the default: deployment files pass every setting through as
    # ${AUTHSVC_<NAME>:-} (docker-compose.yml), so an unset one arrives empty.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )
    # One line for the reference (docs/configuration.md); the class docstring says more.
    title: ClassVar[str]


class OperationsSettings(_Group):
    """How the service runs: its mode, local state, address, logs and housekeeping."""

    title = "Operations"

    env: Literal["development", "production", "test"] = Field(
        "development",
        description="`production` refuses to start without an explicit signing key "
        "(and refuses `AUTHSVC_COOKIE_SECURE=false`).",
    )
    data_dir: Path = Field(
        Path("var"),
        description="Where development signing keys are generated (and other local state lives).",
    )
    public_url: str | None = Field(
        None, description="The externally visible base URL (for metadata)."
    )
    trusted_proxies: CommaList = Field(
        [],
        description="Comma-separated addresses whose `X-Forwarded-For` is believed for the "
        "client address.",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="`auto`: readable lines on a terminal, JSON lines otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The lowest level logged."
    )
    purge_interval_seconds: float = Field(
        3600,
        ge=0,
        description="Seconds between background purges of records nobody needs any more; "
        "`0` disables them.",
    )
    purge_batch_size: int = Field(
        500, ge=1, le=10000, description="Rows deleted per statement by a purge."
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_commas(value)


class DatabaseSettings(_Group):
    """The database and the connection pool that reaches it."""

    title = "Database"

    database_url: str = Field(
        "sqlite+aiosqlite:///./var/authsvc.db",
        description="Any SQLAlchemy async URL; `postgresql+asyncpg://…` in production (a plain "
        "`postgresql://` or `postgres://` URL means the same).",
    )
    db_pool_size: int = Field(10, ge=1, description="Connections kept per worker.")
    # Measured under load: connections opened and closed again at every burst cost
    # PostgreSQL a backend each, and cost throughput and errors.
    db_max_overflow: int = Field(
        0, ge=0, description="Connections opened beyond the pool at a burst (closed after)."
    )
    # A dead or hung database must give 503 within 5 s (README, *Configuration*). The worst
    # chain on a hung one is a wait for a pooled connection, its ping (db.install_checkout_check)
    # or first statement timing out, and its quick close (db.QuickCloseConnection):
    # 1 + 2 + 0.5 s. Measured by tests/e2e/test_database_outage.
    db_connect_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="Time allowed to open a connection (and for its ping after an idle spell).",
    )
    db_pool_timeout_seconds: float = Field(
        1.0, gt=0, description="Time a request waits for a pooled connection."
    )
    db_statement_timeout_seconds: float = Field(
        2.0, gt=0, description="Time allowed to one SQL statement."
    )
    db_pgbouncer: bool = Field(
        False,
        description="Behind PgBouncer in transaction mode: no prepared-statement caches, "
        "unique statement names, no session settings at startup (set `statement_timeout` on "
        "the role instead).",
    )

    @field_validator("database_url", mode="after")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """A plain ``postgresql://`` (or ``postgres://``) URL means asyncpg, and a plain
        ``sqlite://`` one aiosqlite: the service only speaks the async drivers."""
        scheme, sep, rest = value.partition("://")
        drivers = {
            "postgresql": "postgresql+asyncpg",
            "postgres": "postgresql+asyncpg",
            "sqlite": "sqlite+aiosqlite",
        }
        return (
            f"{drivers[scheme.lower()]}{sep}{rest}" if sep and scheme.lower() in drivers else value
        )


class TokenSettings(_Group):
    """Token lifetimes and the keys that sign access tokens."""

    title = "Tokens and keys"

    access_token_ttl_seconds: int = Field(1800, gt=0, description="Access token lifetime.")
    refresh_token_ttl_seconds: int = Field(
        3600, gt=0, description="Refresh token lifetime, from its issue."
    )
    session_max_lifetime_seconds: int = Field(
        43200, gt=0, description="Absolute cap of a session (12 h)."
    )
    refresh_reuse_grace_seconds: int = Field(
        0, ge=0, description="Benign-retry window after a rotation."
    )
    clock_skew_seconds: int = Field(0, ge=0, description="Leeway when checking `exp`.")
    jwt_algorithm: Algorithm = Field(
        "ES256",
        description="The one algorithm access tokens are signed and accepted with (`ES256`, "
        "`EdDSA`, `RS256`, `HS256`).",
    )
    jwt_private_key_file: Path | None = Field(
        None,
        description="PEM private key (unencrypted PKCS#8); in development one is generated "
        "under `AUTHSVC_DATA_DIR` on first start and reused.",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="The secret for an HMAC algorithm (at least 32 bytes)."
    )
    jwt_previous_key_files: CommaList = Field(
        [],
        description="Comma-separated PEM private keys that signed before the current one "
        "(key rotation): their public keys stay in the JWKS and the tokens they signed stay "
        "valid by `kid`.",
    )
    issuer: str = Field(
        "authsvc",
        description="`iss` of access tokens; production requires an https URL without a query "
        "or fragment (RFC 8414).",
    )
    audience: str = Field("authsvc", description="`aud` of access tokens.")

    @field_validator("jwt_previous_key_files", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_commas(value)


class ThrottleSettings(_Group):
    """Limits on guessing and registering, and where their counters live."""

    title = "Throttling"

    login_max_attempts: int = Field(
        5, gt=0, description="Failed logins per window for one username and client address."
    )
    login_window_seconds: int = Field(
        300, gt=0, description="The window of the login limits per address."
    )
    login_max_attempts_per_address: int = Field(
        100,
        gt=0,
        description="Failed logins per window from one client address, across all usernames "
        "(then 429).",
    )
    # NIST SP 800-63B §5.2.2: at most 100 consecutive failures per account, from all
    # addresses together; a successful login resets it, else failures age out of the window.
    login_account_max_failures: int = Field(
        100,
        gt=0,
        le=100,
        description="Failed logins per username from all addresses (then 429, except from "
        "known addresses); at most 100.",
    )
    login_account_window_seconds: int = Field(
        86400, gt=0, description="The window of the per-username limit."
    )
    # NIST SP 800-63B §5.2.2: the account cap must not become a way to lock the owner out.
    login_known_address_days: int = Field(
        30,
        ge=0,
        description="How long a successful login makes its address (IPv6: its /64) known to "
        "that account, exempt from the per-username limit.",
    )
    register_max_per_address: int = Field(
        20, gt=0, description="Registration attempts per window from one client address."
    )
    register_window_seconds: int = Field(
        3600, gt=0, description="The window of the registration limit."
    )
    redis_url: str | None = Field(
        None,
        description="When set, throttling state is kept in Redis instead of the database "
        "(`redis://`, `rediss://` or `redis+unix://`).",
    )
    redis_key_prefix: str = Field(
        "authsvc",
        description="Prefix of every Redis key (instances sharing a Redis for different "
        "services differ).",
    )

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        schemes = ("redis://", "rediss://", "redis+unix://", "valkey://", "valkeys://")
        if value is not None and not value.removeprefix("async+").startswith(schemes):
            raise ValueError("must be a redis://, rediss:// or redis+unix:// URL")
        return value


class PasswordSettings(_Group):
    """Password rules and the cost of hashing them."""

    title = "Passwords and hashing"

    password_min_length: int = Field(12, ge=1, le=128, description="Minimum password length.")
    argon2_memory_cost: int = Field(
        19456,
        ge=8,
        description="argon2id memory per hash, in KiB (the default, with a time cost of 2, is "
        "OWASP's minimum).",
    )
    argon2_time_cost: int = Field(2, ge=1, description="argon2id iterations per hash.")
    argon2_parallelism: int = Field(1, ge=1, description="argon2id lanes per hash.")
    password_hash_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 2,
        ge=1,
        json_schema_extra={"shown_default": "CPU count"},
        description="Hashes running at once per worker (each holds its memory cost); "
        "defaults to the CPU count.",
    )
    password_hash_queue_max: int = Field(
        32,
        ge=0,
        description="Requests allowed to wait for a hashing slot in one worker (then 503).",
    )


class ClientSettings(_Group):
    """Who may call: registration, browsers, and resource servers that introspect."""

    title = "Clients and browsers"

    allow_registration: bool = Field(True, description="Whether `/register` is open.")
    cors_origins: CommaList = Field([], description="Comma-separated origins allowed for browsers.")
    cookie_secure: bool = Field(True, description="`Secure` flag on the refresh cookie.")
    introspection_clients: CommaList = Field(
        [],
        description="Comma-separated `client_id:secret` pairs allowed to call `/introspect`.",
    )

    @field_validator("cors_origins", "introspection_clients", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_commas(value)

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _strip_trailing_slash(cls, value: list[str]) -> list[str]:
        return [origin.rstrip("/") for origin in value]


class Settings(BaseModel):
    """Every knob of the service, by group; the names and defaults are documented (README,
    *Configuration*; docs/configuration.md) and deployments depend on them."""

    model_config = ConfigDict(frozen=True)

    operations: OperationsSettings
    database: DatabaseSettings
    tokens: TokenSettings
    throttle: ThrottleSettings
    passwords: PasswordSettings
    clients: ClientSettings

    def __init__(self, **values: Any) -> None:
        super().__init__(**_grouped(type(self), values))

    @model_validator(mode="after")
    def _enforce_safe_keys(self) -> Self:
        env, tokens = self.operations.env, self.tokens
        secret = tokens.jwt_secret.get_secret_value().encode() if tokens.jwt_secret else None
        if tokens.jwt_algorithm == "HS256":
            if secret is not None and len(secret) < MIN_HMAC_SECRET_BYTES:
                raise ValueError(
                    f"AUTHSVC_JWT_SECRET must be at least {MIN_HMAC_SECRET_BYTES} bytes for HS256"
                )
            if env == "production" and secret is None:
                raise ValueError("AUTHSVC_ENV=production with HS256 requires AUTHSVC_JWT_SECRET")
        elif env == "production" and tokens.jwt_private_key_file is None:
            raise ValueError(
                "AUTHSVC_ENV=production requires AUTHSVC_JWT_PRIVATE_KEY_FILE "
                f"(a PEM private key for {tokens.jwt_algorithm})"
            )
        if env == "production" and not self.clients.cookie_secure:
            raise ValueError("AUTHSVC_ENV=production refuses AUTHSVC_COOKIE_SECURE=false")
        if env == "production" and not is_https_issuer(tokens.issuer):
            raise ValueError(
                "AUTHSVC_ENV=production requires AUTHSVC_ISSUER to be an https URL without a"
                " query or fragment (RFC 8414 §2), e.g. https://auth.example.com"
            )
        return self


def is_https_issuer(issuer: str) -> bool:
    """RFC 8414 §2: an issuer identifier is an ``https`` URL with no query or fragment."""
    parts = urlsplit(issuer)
    return (
        parts.scheme == "https"
        and bool(parts.hostname)
        and not parts.query
        and not parts.fragment
        and "?" not in issuer
        and "#" not in issuer
    )


def groups() -> dict[str, type[_Group]]:
    """The groups of ``Settings`` by attribute name, in the order of the reference."""
    found: dict[str, type[_Group]] = {}
    for name, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type) and issubclass(field.annotation, _Group)
        found[name] = field.annotation
    return found


def setting_fields() -> dict[str, FieldInfo]:
    """Every setting by field name, across the groups (its variable: ``variable(name)``)."""
    return {
        name: field for group in groups().values() for name, field in group.model_fields.items()
    }


def variable(name: str) -> str:
    """The environment variable of the setting ``name``."""
    return f"{ENV_PREFIX}{name.upper()}"


def _grouped(settings_cls: type[Settings], values: dict[str, Any]) -> dict[str, Any]:
    # Source options (``_env_file``, ``_env_prefix``, ...) apply to every group.
    options = {key: value for key, value in values.items() if key.startswith("_")}
    flat = {key: value for key, value in values.items() if not key.startswith("_")}
    built: dict[str, Any] = {}
    for name, field in settings_cls.model_fields.items():
        group = field.annotation
        assert isinstance(group, type) and issubclass(group, _Group)
        given = flat.pop(name, None)
        if isinstance(given, group):
            built[name] = given
            continue
        mine = {key: flat.pop(key) for key in list(flat) if key in group.model_fields}
        built[name] = group(**options, **(given or {}), **mine)
    if flat:
        raise TypeError(f"unknown settings: {', '.join(sorted(flat))}")
    return built


@lru_cache
def get_settings() -> Settings:
    return Settings()
