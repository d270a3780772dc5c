from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from httpx import AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuthSession, User
from tests.conftest import bearer

REALM = 'Bearer realm="authsvc"'
INVALID = f'{REALM}, error="invalid_token"'


async def test_me_returns_the_user(
    client: AsyncClient, user: dict[str, Any], tokens: dict[str, Any]
) -> None:
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json() == user


# Missing, non-bearer, expired and forged tokens: tests/api/test_forged_tokens.py.


async def test_revoked_session_rejects_its_access_token(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(
            update(AuthSession).values(revoked_at=datetime.now(UTC), revoked_reason="test")
        )
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_disabled_user_rejects_a_live_access_token(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(update(User).values(disabled_at=datetime.now(UTC)))
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_unknown_path_uses_the_error_shape(client: AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_wrong_method_uses_the_error_shape(client: AsyncClient) -> None:
    response = await client.delete("/me")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
