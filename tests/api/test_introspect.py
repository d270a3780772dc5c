"""POST /introspect (RFC 7662)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from httpx import AsyncClient

from tests.conftest import ClientFactory, login, register

CLIENTS = "gateway:s3cret-gateway,billing:another:secret"
AUTH = ("gateway", "s3cret-gateway")
INACTIVE = {"active": False}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(raw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


@pytest.fixture
async def iclient(make_client: ClientFactory) -> Any:
    async with make_client(introspection_clients=CLIENTS) as client:
        yield client


async def test_live_access_token_is_active_with_its_claims(iclient: AsyncClient) -> None:
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    response = await iclient.post("/introspect", data={"token": pair["access_token"]}, auth=AUTH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert body == {
        "active": True,
        "sub": user["id"],
        "username": user["username"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "iss": "authsvc",
        "aud": "authsvc",
        "jti": claims["jti"],
        "sid": claims["sid"],
        "token_type": "access_token",
    }


async def test_live_refresh_token_is_active_by_json(iclient: AsyncClient) -> None:
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    response = await iclient.post(
        "/introspect",
        json={"token": pair["refresh_token"], "token_type_hint": "refresh_token"},
        auth=AUTH,
    )
    body = response.json()
    claims = jwt.decode(pair["refresh_token"], options={"verify_signature": False})
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["sub"] == user["id"]
    assert body["username"] == user["username"]
    assert body["sid"] == claims["sid"]
    assert body["jti"] == claims["jti"]
    assert body["exp"] == claims["exp"]
    assert body["iat"] == claims["iat"]
    assert body["iss"] == "authsvc"
    assert set(body) == {
        "active",
        "sub",
        "username",
        "exp",
        "iat",
        "iss",
        "aud",
        "jti",
        "sid",
        "token_type",
    }


async def test_answers_are_byte_for_byte_the_documented_json(iclient: AsyncClient) -> None:
    inactive = await iclient.post("/introspect", data={"token": "garbage"}, auth=AUTH)
    assert inactive.content == b'{"active":false}'
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    for token, kind in (
        (pair["access_token"], "access_token"),
        (pair["refresh_token"], "refresh_token"),
    ):
        active = await iclient.post("/introspect", data={"token": token}, auth=AUTH)
        claims = jwt.decode(token, options={"verify_signature": False})
        expected = {
            "active": True,
            "sub": user["id"],
            "username": user["username"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "iss": claims["iss"] if kind == "access_token" else "authsvc",
            "aud": claims["aud"] if kind == "access_token" else "authsvc#refresh",
            "jti": claims["jti"],
            "sid": claims["sid"],
            "token_type": kind,
        }
        # Compact JSON in the documented key order, nothing left out and nothing added.
        assert active.content == json.dumps(expected, separators=(",", ":")).encode()
    for response in (inactive, active):
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


async def test_second_configured_client_with_colon_in_secret_works(iclient: AsyncClient) -> None:
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    response = await iclient.post(
        "/introspect", data={"token": pair["access_token"]}, auth=("billing", "another:secret")
    )
    assert response.json()["active"] is True


async def test_access_token_of_a_logged_out_session_is_inactive(iclient: AsyncClient) -> None:
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    assert (
        await iclient.post("/logout", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 204
    for token in (pair["access_token"], pair["refresh_token"]):
        response = await iclient.post("/introspect", data={"token": token}, auth=AUTH)
        assert response.status_code == 200
        assert response.json() == INACTIVE


async def test_rotated_refresh_token_is_inactive_and_its_successor_active(
    iclient: AsyncClient,
) -> None:
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    rotated = (await iclient.post("/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    old = await iclient.post("/introspect", data={"token": pair["refresh_token"]}, auth=AUTH)
    assert old.json() == INACTIVE
    new = await iclient.post("/introspect", data={"token": rotated["refresh_token"]}, auth=AUTH)
    assert new.json()["active"] is True
    # Introspection is read-only: the successor still rotates.
    again = await iclient.post("/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 200


async def test_disabled_users_tokens_are_inactive(iclient: AsyncClient, db_engine: Any) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from authsvc.models import User

    user = await register(iclient)
    pair = await login(iclient, user["username"])
    async with db_engine.begin() as conn:
        await conn.execute(
            update(User)
            .where(User.username == user["username"])
            .values(disabled_at=datetime.now(UTC))
        )
    for token in (pair["access_token"], pair["refresh_token"]):
        response = await iclient.post("/introspect", data={"token": token}, auth=AUTH)
        assert response.json() == INACTIVE


async def test_expired_access_token_is_inactive(make_client: ClientFactory) -> None:
    import asyncio

    async with make_client(introspection_clients=CLIENTS, access_token_ttl_seconds=1) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        await asyncio.sleep(2.1)
        response = await client.post("/introspect", data={"token": pair["access_token"]}, auth=AUTH)
        assert response.json() == INACTIVE


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "x" * 9000,
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiIxIn0.",
    ],
)
async def test_garbage_is_inactive_and_nothing_else(iclient: AsyncClient, token: str) -> None:
    response = await iclient.post("/introspect", data={"token": token}, auth=AUTH)
    assert response.status_code == 200
    assert response.json() == INACTIVE


async def test_token_signed_by_another_key_is_inactive(iclient: AsyncClient) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    user = await register(iclient)
    pair = await login(iclient, user["username"])
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    header = jwt.get_unverified_header(pair["access_token"])
    forged = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers=header
    )
    response = await iclient.post("/introspect", data={"token": forged}, auth=AUTH)
    assert response.json() == INACTIVE


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("gateway:wrong"),
        basic("gateway:"),
        basic("nobody:s3cret-gateway"),
        basic("gateway"),
        basic(":"),
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic"},
        {"Authorization": "Bearer s3cret-gateway"},
        basic("GATEWAY:s3cret-gateway"),
    ],
)
async def test_wrong_client_credentials_are_401_invalid_client(
    iclient: AsyncClient, headers: dict[str, str]
) -> None:
    response = await iclient.post("/introspect", data={"token": "anything"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="authsvc"'


async def test_without_configured_clients_every_caller_is_401(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.post("/introspect", data={"token": tokens["access_token"]}, auth=AUTH)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    response = await client.post(
        "/introspect", data={"token": tokens["access_token"]}, auth=(":", "")
    )
    assert response.status_code == 401


async def test_missing_token_is_400_invalid_request(iclient: AsyncClient) -> None:
    response = await iclient.post("/introspect", data={}, auth=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    response = await iclient.post("/introspect", json={"token": ""}, auth=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_client_is_checked_before_the_body(iclient: AsyncClient) -> None:
    response = await iclient.post("/introspect", data={})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_bearer_token_does_not_authenticate_an_introspection_client(
    iclient: AsyncClient,
) -> None:
    user = await register(iclient)
    pair = await login(iclient, user["username"])
    response = await iclient.post(
        "/introspect", data={"token": pair["access_token"]}, headers=bearer(pair["access_token"])
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
