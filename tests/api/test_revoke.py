"""POST /revoke (RFC 7009)."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import bearer, login


async def assert_session_revoked(client: AsyncClient, pair: dict[str, Any]) -> None:
    me = await client.get("/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 401
    assert me.json()["error"] == "invalid_token"
    refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 403
    assert refreshed.json()["error"] == "refresh_token_revoked"


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token", "something_else"])
async def test_revoke_refresh_token_by_form_revokes_its_session(
    client: AsyncClient, tokens: dict[str, Any], hint: str | None
) -> None:
    data = {"token": tokens["refresh_token"]}
    if hint:
        data["token_type_hint"] = hint
    response = await client.post("/revoke", data=data)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    await assert_session_revoked(client, tokens)


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
async def test_revoke_access_token_by_json_revokes_its_session(
    client: AsyncClient, tokens: dict[str, Any], hint: str | None
) -> None:
    body: dict[str, str] = {"token": tokens["access_token"]}
    if hint:
        body["token_type_hint"] = hint
    response = await client.post("/revoke", json=body)
    assert response.status_code == 200
    assert response.content == b""
    await assert_session_revoked(client, tokens)


async def test_revoke_leaves_other_sessions_alone(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    first = await login(client, user["username"])
    second = await login(client, user["username"])
    assert (await client.post("/revoke", data={"token": first["refresh_token"]})).status_code == 200
    assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 200


async def test_revoke_twice_is_200(client: AsyncClient, tokens: dict[str, Any]) -> None:
    for _ in range(2):
        response = await client.post("/revoke", data={"token": tokens["refresh_token"]})
        assert response.status_code == 200
        assert response.content == b""


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 10000, "\u00e9\u00e8"])
async def test_revoke_unknown_token_is_200(
    client: AsyncClient, tokens: dict[str, Any], token: str
) -> None:
    response = await client.post("/revoke", data={"token": token})
    assert response.status_code == 200
    assert response.content == b""
    assert (await client.get("/me", headers=bearer(tokens["access_token"]))).status_code == 200


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"data": {}},
        {"data": {"token": ""}},
        {"data": {"token_type_hint": "refresh_token"}},
        {"json": {}},
        {"json": {"token": None}},
        {"json": {"token": 42}},
        {},
    ],
)
async def test_revoke_without_token_is_400_invalid_request(
    client: AsyncClient, kwargs: dict[str, Any]
) -> None:
    response = await client.post("/revoke", **kwargs)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert isinstance(body["detail"], str)


async def test_revoke_oversized_body_is_413(client: AsyncClient) -> None:
    response = await client.post("/revoke", data={"token": "x" * 70000})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize(
    "content", [b'["token"]', b"{not json"], ids=["json-array", "malformed-json"]
)
async def test_a_malformed_body_gets_the_answer_it_gets_everywhere(
    client: AsyncClient, content: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    response = await client.post("/revoke", content=content, headers=headers)
    at_login = await client.post("/login", content=content, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert response.json() == at_login.json()
