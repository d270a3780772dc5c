from __future__ import annotations

from typing import Any

import jwt
import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuthSession, User
from authsvc.services.users import UserAdminService
from tests.conftest import PASSWORD, ClientFactory, login, register, unique_username

TOKEN_FIELDS = {"access_token", "refresh_token", "token_type", "expires_in", "refresh_expires_in"}


async def test_login_with_json_returns_a_token_pair(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    response = await client.post(
        "/login", json={"username": user["username"], "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_FIELDS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1800
    assert body["refresh_expires_in"] == 3600
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_login_with_the_oauth2_password_form(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    response = await client.post(
        "/login",
        data={
            "username": user["username"],
            "password": PASSWORD,
            "grant_type": "password",
            "scope": "",
        },
    )
    assert response.status_code == 200
    assert set(response.json()) == TOKEN_FIELDS


async def test_login_is_case_insensitive_in_the_username(client: AsyncClient) -> None:
    name = unique_username("Grace")
    await register(client, name)
    await login(client, name.upper())


async def test_login_starts_a_new_session_each_time(
    client: AsyncClient, user: dict[str, Any], clean_db: AsyncEngine
) -> None:
    first = await login(client, user["username"])
    second = await login(client, user["username"])
    sid = lambda t: jwt.decode(t["access_token"], options={"verify_signature": False})["sid"]  # noqa: E731
    assert sid(first) != sid(second)
    async with clean_db.connect() as conn:
        sessions = (await conn.execute(select(AuthSession.id))).all()
    assert len(sessions) == 2


async def _failed_login(client: AsyncClient, username: str, password: str) -> Any:
    return await client.post("/login", json={"username": username, "password": password})


async def test_disabled_account_is_refused_only_after_a_correct_password(
    client: AsyncClient, user: dict[str, Any], clean_db: AsyncEngine, settings: Any
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(clean_db, expire_on_commit=False) as session:
        await UserAdminService(session).disable(user["username"], datetime.now(UTC))
    wrong = await _failed_login(client, user["username"], "not the right password")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"
    right = await _failed_login(client, user["username"], PASSWORD)
    assert right.status_code == 403
    assert right.json()["error"] == "account_disabled"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "someone"},
        {"password": PASSWORD},
        {"username": "x", "password": PASSWORD},
        {"username": "nul\x00user", "password": PASSWORD},
        {"username": ["list"], "password": PASSWORD},
        [],
        "string",
    ],
)
async def test_malformed_login_body_is_a_validation_error(client: AsyncClient, body: Any) -> None:
    response = await client.post("/login", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_login_rehashes_when_the_parameters_change(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    name = unique_username("henry")
    async with make_client() as client:
        await register(client, name)
    async with clean_db.connect() as conn:
        before = (
            await conn.execute(select(User.password_hash).where(User.username == name))
        ).scalar_one()
    async with make_client(argon2_memory_cost=2048, argon2_time_cost=2) as client:
        await login(client, name)
    async with clean_db.connect() as conn:
        after = (
            await conn.execute(select(User.password_hash).where(User.username == name))
        ).scalar_one()
    assert before != after
    assert "m=2048,t=2" in after
    async with make_client(argon2_memory_cost=2048, argon2_time_cost=2) as client:
        await login(client, name)  # the new hash verifies


async def test_cookie_transport_puts_the_refresh_token_only_in_the_cookie(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    response = await client.post(
        "/login",
        params={"transport": "cookie"},
        json={"username": user["username"], "password": PASSWORD},
    )
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    cookie = response.headers["set-cookie"]
    for part in (
        "authsvc_refresh=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=3600",
    ):
        assert part in cookie  # spelled as the README spells it (*Walk-through with curl*)


@pytest.mark.parametrize("form", [False, True])
async def test_cookie_login_from_a_foreign_origin_is_refused_and_creates_nothing(
    make_client: ClientFactory, clean_db: AsyncEngine, form: bool
) -> None:
    # Login CSRF: a foreign page posting its own credentials must not plant its session.
    async with make_client(cors_origins="https://app.example") as client:
        user = await register(client)
        body = {"username": user["username"], "password": PASSWORD}
        sent = {"data": body} if form else {"json": body}
        foreign = await client.post(
            "/login",
            params={"transport": "cookie"},
            headers={"Origin": "https://evil.example"},
            **sent,  # type: ignore[arg-type]
        )
        assert foreign.status_code == 403
        assert foreign.json()["error"] == "origin_not_allowed"
        assert "set-cookie" not in foreign.headers
        async with clean_db.connect() as conn:
            assert (await conn.execute(select(AuthSession.id))).first() is None
        for headers in ({"Origin": "https://app.example"}, {}):
            allowed = await client.post(
                "/login",
                params={"transport": "cookie"},
                headers=headers,
                **sent,  # type: ignore[arg-type]
            )
            assert allowed.status_code == 200, allowed.text
            assert allowed.headers["set-cookie"].startswith("authsvc_refresh=")
        # The JSON transport sets no cookie, so it is not a CSRF target.
        plain = await client.post("/login", headers={"Origin": "https://evil.example"}, json=body)
        assert plain.status_code == 200


async def test_cookie_secure_false_drops_the_secure_flag(make_client: ClientFactory) -> None:
    async with make_client(cookie_secure=False) as client:
        user = await register(client)
        response = await client.post(
            "/login",
            params={"transport": "cookie"},
            json={"username": user["username"], "password": PASSWORD},
        )
    assert "secure" not in response.headers["set-cookie"].lower()
