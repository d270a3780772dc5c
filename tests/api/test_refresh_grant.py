"""The refresh grant at the token endpoint (RFC 6749 §6): ``POST /login`` with
``grant_type=refresh_token``, one rotation chain with ``/generateTokens``, §5.2 errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from httpx import AsyncClient, Response
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuthSession, RefreshToken
from tests.conftest import bearer, login, register


async def grant(client: AsyncClient, refresh_token: str, **params: str) -> Response:
    """The refresh grant as an OAuth2 client sends it: a form."""
    return await client.post(
        "/login",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        params=params,
    )


def assert_invalid_grant(response: Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) == {"error", "detail"}


async def test_refresh_grant_rotates_and_returns_a_new_pair(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await grant(client, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["expires_in"] > 0 and body["refresh_expires_in"] > 0
    old_sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    new_sid = jwt.decode(body["access_token"], options={"verify_signature": False})["sid"]
    assert new_sid == old_sid
    me = await client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_one_chain_with_generate_tokens(client: AsyncClient, tokens: dict[str, Any]) -> None:
    # login -> /generateTokens -> refresh grant -> /refresh -> refresh grant: one chain.
    second = (
        await client.post("/generateTokens", json={"refresh_token": tokens["refresh_token"]})
    ).json()["refresh_token"]
    third = (await grant(client, second)).json()["refresh_token"]
    fourth = (await client.post("/refresh", json={"refresh_token": third})).json()["refresh_token"]
    fifth = await grant(client, fourth)
    assert fifth.status_code == 200
    # A token rotated at one endpoint is spent at the other: reuse, whichever way round.
    reused_at_grant = await grant(client, third)
    assert_invalid_grant(reused_at_grant)
    # ... and the reuse revoked the session: its newest token is dead at both endpoints.
    newest = fifth.json()["refresh_token"]
    at_refresh = await client.post("/refresh", json={"refresh_token": newest})
    assert at_refresh.status_code == 403
    assert at_refresh.json()["error"] == "refresh_token_revoked"
    assert_invalid_grant(await grant(client, newest))


async def test_token_rotated_at_the_grant_is_reuse_at_generate_tokens(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    successor = (await grant(client, tokens["refresh_token"])).json()["refresh_token"]
    reused = await client.post("/generateTokens", json={"refresh_token": tokens["refresh_token"]})
    assert reused.status_code == 403
    assert reused.json()["error"] == "refresh_token_reused"
    assert_invalid_grant(await grant(client, successor))


async def test_reuse_at_the_grant_revokes_the_session(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    rotated = (await grant(client, tokens["refresh_token"])).json()
    reused = await grant(client, tokens["refresh_token"])
    assert_invalid_grant(reused)
    assert "already used" in reused.json()["detail"]
    me = await client.get("/me", headers=bearer(rotated["access_token"]))
    assert me.status_code == 401
    assert me.json()["error"] == "invalid_token"


async def test_expired_refresh_token_is_invalid_grant(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(
            update(RefreshToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert_invalid_grant(await grant(client, tokens["refresh_token"]))


async def test_revoked_session_is_invalid_grant(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    logout = await client.post("/logout", json={"refresh_token": tokens["refresh_token"]})
    assert logout.status_code == 204
    assert_invalid_grant(await grant(client, tokens["refresh_token"]))
    async with clean_db.connect() as conn:
        revoked = (await conn.execute(AuthSession.__table__.select())).mappings().all()
    assert [row["revoked_reason"] for row in revoked] == ["logout"]


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 5000])
async def test_malformed_refresh_token_is_invalid_grant(client: AsyncClient, token: str) -> None:
    assert_invalid_grant(await grant(client, token))


async def test_access_token_is_not_a_refresh_grant(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    assert_invalid_grant(await grant(client, tokens["access_token"]))
    # Nothing was consumed.
    assert (await grant(client, tokens["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "grant_type", ["client_credentials", "authorization_code", "implicit", "REFRESH_TOKEN", ""]
)
async def test_other_grant_types_are_unsupported(
    client: AsyncClient, tokens: dict[str, Any], grant_type: str
) -> None:
    response = await client.post(
        "/login", data={"grant_type": grant_type, "refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unsupported_grant_type"
    # Nothing was consumed.
    assert (await grant(client, tokens["refresh_token"])).status_code == 200


@pytest.mark.parametrize("grant_type", ["client_credentials", 5, ["refresh_token"], {}])
async def test_other_grant_types_in_json_are_unsupported(
    client: AsyncClient, grant_type: object
) -> None:
    response = await client.post(
        "/login", json={"grant_type": grant_type, "username": "alice", "password": "x" * 12}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": ""},
    ],
)
async def test_refresh_grant_without_a_token_is_invalid_request(
    client: AsyncClient, data: dict[str, str]
) -> None:
    response = await client.post("/login", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "refresh_token" in response.json()["detail"]


async def test_refresh_grant_in_json_is_accepted_too(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.post(
        "/login", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    bad = await client.post("/login", json={"grant_type": "refresh_token", "refresh_token": 7})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"


async def test_password_grant_is_unchanged(client: AsyncClient) -> None:
    user = await register(client)
    form = {"grant_type": "password", "username": user["username"], "password": "wrong" * 3}
    wrong = await client.post("/login", data=form)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"
    assert (await login(client, user["username"]))["refresh_token"]


async def test_refresh_grant_with_cookie_transport_answers_by_cookie(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await grant(client, tokens["refresh_token"], transport="cookie")
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("authsvc_refresh=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


async def test_metadata_lists_both_grants(client: AsyncClient) -> None:
    body = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert body["grant_types_supported"] == ["password", "refresh_token"]
    assert body["token_endpoint"].endswith("/login")


async def test_openapi_documents_the_refresh_grant(client: AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/login"]["post"]
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    grants = {
        tuple(option["properties"]["grant_type"].get("enum", []))
        or option["properties"]["grant_type"].get("const")
        for option in form["anyOf"]
        if "grant_type" in option.get("required", [])
    }
    assert grants == {"refresh_token"}
    described = operation["responses"]["400"]["description"]
    for code in ("invalid_grant", "unsupported_grant_type", "invalid_request"):
        assert code in described


async def test_refresh_grant_by_cookie_transport_from_a_foreign_origin_consumes_nothing(
    make_client: Any,
) -> None:
    # Login CSRF covers the whole token endpoint: the refresh grant would set a cookie too.
    async with make_client(cors_origins="https://app.example") as client:
        user = await register(client)
        pair = await login(client, user["username"])
        foreign = await client.post(
            "/login",
            data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
            params={"transport": "cookie"},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert foreign.json()["error"] == "origin_not_allowed"
        assert "set-cookie" not in foreign.headers
        # Not consumed: the token still rotates once.
        assert (await grant(client, pair["refresh_token"])).status_code == 200
