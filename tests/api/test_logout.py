"""POST /logout and POST /logout/all."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import ClientFactory, FakeClock, bearer, login, register


async def test_logout_revokes_the_session(client: AsyncClient, tokens: dict[str, Any]) -> None:
    response = await client.post("/logout", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204
    assert response.content == b""

    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 403
    assert refreshed.json()["error"] == "refresh_token_revoked"
    me = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    assert me.json()["error"] == "invalid_token"


async def test_logout_leaves_other_sessions_alone(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    first = await login(client, user["username"])
    second = await login(client, user["username"])
    assert (
        await client.post("/logout", json={"refresh_token": first["refresh_token"]})
    ).status_code == 204
    assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 200
    rotated = await client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert rotated.status_code == 200


async def test_logout_twice_is_still_204(client: AsyncClient, tokens: dict[str, Any]) -> None:
    for _ in range(2):
        response = await client.post("/logout", json={"refresh_token": tokens["refresh_token"]})
        assert response.status_code == 204


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "x" * 5000,
        "eyJhbGciOiJub25lIiwidHlwIjoicnQrand0In0.eyJzdWIiOiIxIn0.",
    ],
)
async def test_logout_with_unknown_or_forged_token_is_204(client: AsyncClient, token: str) -> None:
    response = await client.post("/logout", json={"refresh_token": token})
    assert response.status_code == 204


async def test_logout_with_an_access_token_changes_nothing(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.post("/logout", json={"refresh_token": tokens["access_token"]})
    assert response.status_code == 204
    assert (await client.get("/me", headers=bearer(tokens["access_token"]))).status_code == 200


async def test_logout_with_rotated_token_ends_the_session(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    rotated = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    response = await client.post("/logout", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204
    newest = await client.post("/refresh", json={"refresh_token": rotated.json()["refresh_token"]})
    assert newest.status_code == 403
    assert newest.json()["error"] == "refresh_token_revoked"


async def test_logout_with_expired_token_is_204(make_client: ClientFactory) -> None:
    clock = FakeClock()
    async with make_client(refresh_token_ttl_seconds=1, clock=clock) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        clock.advance(2)
        expired = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert expired.json()["error"] == "refresh_token_expired"
        response = await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
        assert response.status_code == 204


@pytest.mark.parametrize("body", [None, {}, {"refresh_token": None}, {"refresh_token": ""}])
async def test_logout_without_a_token_is_422(client: AsyncClient, body: Any) -> None:
    response = (
        await client.post("/logout", json=body)
        if body is not None
        else await client.post("/logout")
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_logout_with_malformed_json_is_422(client: AsyncClient) -> None:
    response = await client.post(
        "/logout", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_logout_by_cookie_revokes_and_clears_the_cookie(make_client: ClientFactory) -> None:
    async with make_client(cookie_secure=False) as client:
        user = await register(client)
        pair = await login(client, user["username"], transport="cookie")
        cookie = client.cookies.get("authsvc_refresh")
        assert cookie
        response = await client.post("/logout")
        assert response.status_code == 204
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith('authsvc_refresh=""') or set_cookie.startswith(
            "authsvc_refresh=;"
        )
        assert "Max-Age=0" in set_cookie
        assert "HttpOnly" in set_cookie
        assert "authsvc_refresh" not in client.cookies
        refreshed = await client.post("/refresh", json={"refresh_token": cookie})
        assert refreshed.status_code == 403
        assert refreshed.json()["error"] == "refresh_token_revoked"
        me = await client.get("/me", headers=bearer(pair["access_token"]))
        assert me.json()["error"] == "invalid_token"


async def test_logout_by_body_also_clears_the_cookie(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.post("/logout", json={"refresh_token": tokens["refresh_token"]})
    assert "authsvc_refresh=" in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]


async def test_cookie_logout_from_a_foreign_origin_is_refused(make_client: ClientFactory) -> None:
    async with make_client(cookie_secure=False, cors_origins="https://app.example") as client:
        user = await register(client)
        await login(client, user["username"], transport="cookie")
        cookie = client.cookies.get("authsvc_refresh")
        refused = await client.post("/logout", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "origin_not_allowed"
        allowed = await client.post("/logout", headers={"Origin": "https://app.example"})
        assert allowed.status_code == 204
        refreshed = await client.post("/refresh", json={"refresh_token": cookie})
        assert refreshed.json()["error"] == "refresh_token_revoked"


async def test_logout_all_revokes_every_session(client: AsyncClient, user: dict[str, Any]) -> None:
    pairs = [await login(client, user["username"]) for _ in range(3)]
    other = await register(client)
    others = await login(client, other["username"])

    response = await client.post("/logout/all", headers=bearer(pairs[0]["access_token"]))
    assert response.status_code == 204
    for pair in pairs:
        refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 403
        assert refreshed.json()["error"] == "refresh_token_revoked"
        me = await client.get("/me", headers=bearer(pair["access_token"]))
        assert me.json()["error"] == "invalid_token"
    assert (await client.get("/me", headers=bearer(others["access_token"]))).status_code == 200


async def test_logout_all_requires_a_bearer_token(client: AsyncClient) -> None:
    response = await client.post("/logout/all")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response.headers["www-authenticate"] == 'Bearer realm="authsvc"'
    forged = await client.post("/logout/all", headers=bearer("a.b.c"))
    assert forged.status_code == 401
    assert forged.json()["error"] == "invalid_token"


async def test_logout_all_with_a_refresh_token_as_bearer_is_401(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.post("/logout/all", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
