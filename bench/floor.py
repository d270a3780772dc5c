"""The benchmark's floor: authsvc's hot paths written by hand with no layers.

A minimal FastAPI app on a raw asyncpg pool, on authsvc's own schema, doing the work the
contract makes the service do and nothing else (no middleware, no ORM, no validation
models, no metrics, no logs):

- ``GET /me`` verifies an ES256 access token and reads the live session joined to its user
  by primary key, in one statement.
- ``POST /generateTokens`` verifies the HS256 refresh JWT, then in one transaction consumes
  it (``UPDATE refresh_tokens ... RETURNING``), checks and touches its session
  (``UPDATE sessions ... RETURNING``), inserts the successor's hash and the rotation's audit
  event; then signs the successor and an ES256 access token.
- ``POST /login`` (only to start the chains) verifies the argon2 hash in a thread and creates
  the session, its first refresh token and the audit event.

Run by bench/run.py as ``uvicorn floor:app --app-dir bench --workers 2`` with
``BENCH_FLOOR_DSN`` (a PostgreSQL DSN) and ``BENCH_FLOOR_KEY`` (an EC P-256 PEM private key).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ISSUER = AUDIENCE = "authsvc"
REFRESH_AUDIENCE = "authsvc#refresh"
ACCESS_TTL = 1800
REFRESH_TTL = 3600
SESSION_CAP = 43200
CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti", "sid"]

_private = serialization.load_pem_private_key(
    Path(os.environ["BENCH_FLOOR_KEY"]).read_bytes(), password=None
)
_public = _private.public_key()
KID = hashlib.sha256(
    _public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).hexdigest()[:16]
REFRESH_KEY = hashlib.sha256(
    b"floor refresh key"
    + _private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
).digest()
_hasher = PasswordHasher()
pool: asyncpg.Pool[Any]


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["BENCH_FLOOR_DSN"], min_size=10, max_size=10)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None)


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": code}, status_code=status)


def _pair(user_id: uuid.UUID, session_id: uuid.UUID, refresh: str, refresh_exp: int, iat: int):
    access = jwt.encode(
        {
            "iss": ISSUER,
            "sub": str(user_id),
            "aud": AUDIENCE,
            "iat": iat,
            "exp": iat + ACCESS_TTL,
            "jti": secrets.token_urlsafe(16),
            "sid": str(session_id),
        },
        _private,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": KID},
    )
    return JSONResponse(
        {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": ACCESS_TTL,
            "refresh_expires_in": refresh_exp - iat,
        }
    )


def _refresh_token(user_id: uuid.UUID, session_id: uuid.UUID, iat: int, exp: int) -> str:
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "aud": REFRESH_AUDIENCE,
        "iat": iat,
        "exp": exp,
        "jti": secrets.token_urlsafe(16),
        "sid": str(session_id),
    }
    return jwt.encode(claims, REFRESH_KEY, algorithm="HS256", headers={"typ": "rt+jwt"})


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@app.post("/login")
async def login(request: Request) -> JSONResponse:
    body = await request.json()
    username, password = str(body["username"]).lower(), str(body["password"])
    row = await pool.fetchrow(
        "SELECT id, password_hash FROM users WHERE username = $1 AND disabled_at IS NULL",
        username,
    )
    if row is None:
        return _error(401, "invalid_credentials")
    try:
        await asyncio.to_thread(_hasher.verify, row["password_hash"], password)
    except VerificationError:
        return _error(401, "invalid_credentials")
    now = datetime.now(UTC)
    iat = int(now.timestamp())
    session_id = uuid.uuid4()
    refresh = _refresh_token(row["id"], session_id, iat, iat + REFRESH_TTL)
    ip = request.client.host if request.client else None
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at, ip_address)"
            " VALUES ($1, $2, $3, $4, $3, $5)",
            session_id,
            row["id"],
            now,
            now + timedelta(seconds=SESSION_CAP),
            ip,
        )
        await conn.execute(
            "INSERT INTO refresh_tokens (id, session_id, token_hash, issued_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4(),
            session_id,
            _sha256(refresh),
            now,
            now + timedelta(seconds=REFRESH_TTL),
        )
        await conn.execute(
            "INSERT INTO audit_events (occurred_at, event, user_id, session_id, ip_address)"
            " VALUES ($1, 'login_succeeded', $2, $3, $4)",
            now,
            row["id"],
            session_id,
            ip,
        )
    return _pair(row["id"], session_id, refresh, iat + REFRESH_TTL, iat)


@app.post("/generateTokens")
async def generate_tokens(request: Request) -> JSONResponse:
    body = await request.json()
    presented = str(body["refresh_token"])
    try:
        jwt.decode(
            presented,
            REFRESH_KEY,
            algorithms=["HS256"],
            audience=REFRESH_AUDIENCE,
            issuer=ISSUER,
            options={"require": CLAIMS},
        )
    except jwt.PyJWTError:
        return _error(403, "invalid_refresh_token")
    now = datetime.now(UTC)
    iat = int(now.timestamp())
    ip = request.client.host if request.client else None
    try:
        async with pool.acquire() as conn, conn.transaction():
            consumed, session, successor, exp = await _rotate(conn, presented, now, iat, ip)
    except _Refused:
        return _error(403, "invalid_refresh_token")
    return _pair(session["user_id"], consumed["session_id"], successor, exp, iat)


class _Refused(Exception):
    """Rolls the rotation's transaction back."""


async def _rotate(conn: Any, presented: str, now: datetime, iat: int, ip: str | None) -> Any:
    consumed = await conn.fetchrow(
        "UPDATE refresh_tokens SET consumed_at = $2"
        " WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2"
        " RETURNING id, session_id",
        _sha256(presented),
        now,
    )
    if consumed is None:
        raise _Refused
    session = await conn.fetchrow(
        "UPDATE sessions SET last_used_at = $2, ip_address = $3"
        " WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2"
        " RETURNING user_id, expires_at",
        consumed["session_id"],
        now,
        ip,
    )
    if session is None:
        raise _Refused
    exp = min(iat + REFRESH_TTL, int(session["expires_at"].timestamp()))
    successor = _refresh_token(session["user_id"], consumed["session_id"], iat, exp)
    await conn.execute(
        "INSERT INTO refresh_tokens"
        " (id, session_id, token_hash, parent_id, issued_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        uuid.uuid4(),
        consumed["session_id"],
        _sha256(successor),
        consumed["id"],
        now,
        datetime.fromtimestamp(exp, UTC),
    )
    await conn.execute(
        "INSERT INTO audit_events (occurred_at, event, user_id, session_id, ip_address)"
        " VALUES ($1, 'refresh_rotated', $2, $3, $4)",
        now,
        session["user_id"],
        consumed["session_id"],
        ip,
    )
    return consumed, session, successor, exp


@app.get("/me")
async def me(request: Request) -> JSONResponse:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "not_authenticated")
    try:
        decoded = jwt.decode_complete(
            token,
            _public,
            algorithms=["ES256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": CLAIMS},
        )
    except jwt.PyJWTError:
        return _error(401, "invalid_token")
    if decoded["header"].get("typ") != "at+jwt":
        return _error(401, "invalid_token")
    claims = decoded["payload"]
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3"
        " AND u.disabled_at IS NULL",
        uuid.UUID(claims["sid"]),
        uuid.UUID(claims["sub"]),
        datetime.now(UTC),
    )
    if row is None:
        return _error(401, "invalid_token")
    return JSONResponse(
        {
            "id": str(row["id"]),
            "username": row["username"],
            "created_at": row["created_at"].isoformat(),
        }
    )
