from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from httpx import AsyncClient, Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuthSession, RefreshToken
from authsvc.security.tokens import token_hash
from tests.conftest import PASSWORD, ClientFactory, bearer, login, register


async def refresh(client: AsyncClient, token: str, path: str = "/generateTokens") -> Response:
    return await client.post(path, json={"refresh_token": token})


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize("path", ["/generateTokens", "/refresh"])
async def test_refresh_rotates_the_token(
    client: AsyncClient, tokens: dict[str, Any], path: str
) -> None:
    response = await refresh(client, tokens["refresh_token"], path)
    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["access_token"] != tokens["access_token"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert claims(body["access_token"])["sid"] == claims(tokens["access_token"])["sid"]
    me = await client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_refresh_tokens_differ_from_access_tokens(tokens: dict[str, Any]) -> None:
    access = jwt.get_unverified_header(tokens["access_token"])
    refresh_header = jwt.get_unverified_header(tokens["refresh_token"])
    assert access["typ"] == "at+jwt"
    assert refresh_header["typ"] != access["typ"]
    assert claims(tokens["refresh_token"])["aud"] != claims(tokens["access_token"])["aud"]
    assert {"sub", "sid", "jti", "iat", "exp"} <= set(claims(tokens["refresh_token"]))


async def test_database_stores_only_the_hash(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.connect() as conn:
        hashes = (await conn.execute(select(RefreshToken.token_hash))).scalars().all()
    assert hashes == [token_hash(tokens["refresh_token"])]


async def test_rotated_token_presented_again_revokes_the_whole_session(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    newest = (await refresh(client, tokens["refresh_token"])).json()
    reused = await refresh(client, tokens["refresh_token"])
    assert reused.status_code == 403
    assert reused.json()["error"] == "refresh_token_reused"
    after = await refresh(client, newest["refresh_token"])
    assert after.status_code == 403
    assert after.json()["error"] == "refresh_token_revoked"
    me = await client.get("/me", headers=bearer(newest["access_token"]))
    assert me.status_code == 401
    assert me.json()["error"] == "invalid_token"


async def test_reuse_is_caught_late_and_wins_over_expiry(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    await refresh(client, tokens["refresh_token"])
    past = datetime.now(UTC) - timedelta(minutes=5)
    async with clean_db.begin() as conn:
        await conn.execute(update(RefreshToken).values(expires_at=past))
    reused = await refresh(client, tokens["refresh_token"])
    assert reused.status_code == 403
    assert reused.json()["error"] == "refresh_token_reused"


async def test_expired_refresh_token(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(
            update(RefreshToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = await refresh(client, tokens["refresh_token"])
    assert response.status_code == 403
    assert response.json()["error"] == "refresh_token_expired"


async def test_session_past_its_cap_is_expired(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(
            update(AuthSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = await refresh(client, tokens["refresh_token"])
    assert response.status_code == 403
    assert response.json()["error"] == "refresh_token_expired"
    # The failed attempt consumed nothing: the token row is still unconsumed.
    async with clean_db.connect() as conn:
        consumed = (await conn.execute(select(RefreshToken.consumed_at))).scalars().all()
    assert consumed == [None]


async def test_revocation_wins_over_expiry(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    async with clean_db.begin() as conn:
        await conn.execute(update(AuthSession).values(revoked_at=now, revoked_reason="test"))
        await conn.execute(update(RefreshToken).values(expires_at=now - timedelta(seconds=1)))
    response = await refresh(client, tokens["refresh_token"])
    assert response.status_code == 403
    assert response.json()["error"] == "refresh_token_revoked"


async def test_refresh_expiry_is_capped_by_the_session_lifetime(make_client: ClientFactory) -> None:
    async with make_client(
        session_max_lifetime_seconds=600, refresh_token_ttl_seconds=3600
    ) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        assert 598 <= pair["refresh_expires_in"] <= 600
        rotated = (await refresh(client, pair["refresh_token"])).json()
        assert rotated["refresh_expires_in"] <= 600
        assert claims(rotated["refresh_token"])["exp"] <= claims(pair["refresh_token"])["exp"]


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "x" * 5000, "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."],
)
async def test_malformed_refresh_token(client: AsyncClient, token: str) -> None:
    response = await refresh(client, token)
    if token == "":
        assert response.status_code == 422
        return
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_refresh_token"


async def test_access_token_is_not_a_refresh_token(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await refresh(client, tokens["access_token"])
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_refresh_token"


async def test_refresh_token_is_not_an_access_token(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    response = await client.get("/me", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


# Forged refresh tokens: the table in tests/api/test_forged_tokens.py.


async def test_unknown_but_validly_signed_refresh_token(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(RefreshToken.__table__.delete())
    response = await refresh(client, tokens["refresh_token"])
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_refresh_token"


async def test_no_token_at_all_is_a_validation_error(client: AsyncClient) -> None:
    for kwargs in ({"json": {}}, {}, {"json": {"refresh_token": None}}):
        response = await client.post("/generateTokens", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 422
        assert response.json()["error"] == "validation_error"


# -- grace window ----------------------------------------------------------------------


async def test_grace_retry_returns_the_same_successor(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    async with make_client(refresh_reuse_grace_seconds=30) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        first = (await refresh(client, pair["refresh_token"])).json()
        retry = await refresh(client, pair["refresh_token"])
        assert retry.status_code == 200
        assert retry.json()["refresh_token"] == first["refresh_token"]
        assert retry.json()["refresh_expires_in"] <= first["refresh_expires_in"]
        me = await client.get("/me", headers=bearer(retry.json()["access_token"]))
        assert me.status_code == 200
        # The chain goes on from the shared successor; nothing was revoked.
        nxt = await refresh(client, first["refresh_token"])
        assert nxt.status_code == 200
    async with clean_db.connect() as conn:
        revoked = (await conn.execute(select(AuthSession.revoked_at))).scalars().all()
        rows = (await conn.execute(select(RefreshToken.id))).all()
    assert revoked == [None]
    assert len(rows) == 3


async def test_grace_covers_only_the_immediate_predecessor(make_client: ClientFactory) -> None:
    async with make_client(refresh_reuse_grace_seconds=30) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        second = (await refresh(client, pair["refresh_token"])).json()
        third = (await refresh(client, second["refresh_token"])).json()
        stale = await refresh(client, pair["refresh_token"])
        assert stale.status_code == 403
        assert stale.json()["error"] == "refresh_token_reused"
        assert (await refresh(client, third["refresh_token"])).json()[
            "error"
        ] == "refresh_token_revoked"


async def test_repeat_after_the_grace_window_is_reuse(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    async with make_client(refresh_reuse_grace_seconds=5) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        await refresh(client, pair["refresh_token"])
        async with clean_db.begin() as conn:
            await conn.execute(
                update(RefreshToken)
                .where(RefreshToken.consumed_at.is_not(None))
                .values(consumed_at=datetime.now(UTC) - timedelta(seconds=6))
            )
        late = await refresh(client, pair["refresh_token"])
        assert late.status_code == 403
        assert late.json()["error"] == "refresh_token_reused"


async def test_concurrent_presentations_over_asgi_give_one_success(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    responses = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [403] * 7
    assert {r.json()["error"] for r in responses if r.status_code == 403} == {
        "refresh_token_reused"
    }


# -- cookie transport --------------------------------------------------------------------


async def _cookie_login(client: AsyncClient, username: str) -> str:
    response = await client.post(
        "/login", params={"transport": "cookie"}, json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].split(";")[0]
    return cookie.split("=", 1)[1]


async def test_refresh_by_cookie_answers_by_cookie(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    token = await _cookie_login(client, user["username"])
    response = await client.post("/refresh", headers={"Cookie": f"authsvc_refresh={token}"})
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    new_cookie = response.headers["set-cookie"]
    assert new_cookie.startswith("authsvc_refresh=")
    assert f"Max-Age={response.json()['refresh_expires_in']}" in new_cookie
    assert token not in new_cookie


async def test_body_token_wins_over_cookie(client: AsyncClient, user: dict[str, Any]) -> None:
    cookie_token = await _cookie_login(client, user["username"])
    pair = await login(client, user["username"])
    response = await client.post(
        "/refresh",
        json={"refresh_token": pair["refresh_token"]},
        headers={"Cookie": f"authsvc_refresh={cookie_token}"},
    )
    assert response.status_code == 200
    assert "refresh_token" in response.json()


async def test_cookie_from_a_foreign_origin_is_refused_and_consumes_nothing(
    make_client: ClientFactory,
) -> None:
    async with make_client(cors_origins="https://app.example") as client:
        user = await register(client)
        token = await _cookie_login(client, user["username"])
        foreign = await client.post(
            "/refresh",
            headers={"Cookie": f"authsvc_refresh={token}", "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert foreign.json()["error"] == "origin_not_allowed"
        allowed = await client.post(
            "/refresh",
            headers={"Cookie": f"authsvc_refresh={token}", "Origin": "https://app.example"},
        )
        assert allowed.status_code == 200
