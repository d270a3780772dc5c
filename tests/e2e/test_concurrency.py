"""40 simultaneous refreshes of one token against ``authsvc serve --workers 4``, on PostgreSQL
(what the issue requires) and on SQLite (one writer at a time, same outcome)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuthSession, RefreshToken
from tests.conftest import PASSWORD, bearer, unique_username
from tests.e2e.conftest import ServerFactory

pytestmark = pytest.mark.slow

N = 40
WORKERS = "4"


async def _login(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    username = unique_username("racer")
    body = {"username": username, "password": PASSWORD}
    assert (await http.post(f"{url}/register", json=body)).status_code == 201
    response = await http.post(f"{url}/login", json=body)
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


async def _race(*urls: str) -> tuple[list[httpx.Response], dict[str, str]]:
    """Log in on the first server, then send N refreshes of that token at once, spread
    round-robin over ``urls`` (several instances sharing one database and key)."""
    limits = httpx.Limits(max_connections=N + 10, max_keepalive_connections=N + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        pair = await _login(http, urls[0])
        targets = [urls[i % len(urls)] for i in range(N)]
        # Open N connections first (spread over the workers by the kernel), so the N
        # refreshes leave at once instead of waiting on connects.
        warm = await asyncio.gather(*(http.get(f"{u}/.well-known/jwks.json") for u in targets))
        assert {r.status_code for r in warm} == {200}
        body = {"refresh_token": pair["refresh_token"]}
        responses = await asyncio.gather(*(http.post(f"{u}/refresh", json=body) for u in targets))
    return list(responses), pair


async def _chain(engine: AsyncEngine, session_id: uuid.UUID) -> tuple[bool, int]:
    async with engine.connect() as conn:
        revoked_at = (
            await conn.execute(select(AuthSession.revoked_at).where(AuthSession.id == session_id))
        ).scalar_one()
        successors = (
            await conn.execute(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.session_id == session_id, RefreshToken.parent_id.is_not(None))
            )
        ).scalar_one()
    return revoked_at is not None, successors


def _session_id(access_token: str) -> uuid.UUID:
    return uuid.UUID(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def test_forty_concurrent_refreshes_give_one_200_and_39_reused(
    run_server: ServerFactory, server_database_url: str, db_engine: AsyncEngine
) -> None:
    server = run_server(
        env={"AUTHSVC_DATABASE_URL": server_database_url}, args=["--workers", WORKERS]
    )

    responses, pair = await _race(server.url)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 403: N - 1}, (statuses, [r.text for r in responses][:5])
    errors = Counter(r.json()["error"] for r in responses if r.status_code == 403)
    assert errors == {"refresh_token_reused": N - 1}
    revoked, successors = await _chain(db_engine, _session_id(pair["access_token"]))
    assert revoked
    assert successors == 1
    server.stop()
    assert "Traceback" not in server.output()
    assert '" 500' not in server.output()


async def test_forty_concurrent_refreshes_within_grace_get_one_successor(
    run_server: ServerFactory, server_database_url: str, db_engine: AsyncEngine
) -> None:
    server = run_server(
        env={
            "AUTHSVC_DATABASE_URL": server_database_url,
            "AUTHSVC_REFRESH_REUSE_GRACE_SECONDS": "30",
        },
        args=["--workers", WORKERS],
    )

    responses, pair = await _race(server.url)

    assert Counter(r.status_code for r in responses) == {200: N}, [r.text for r in responses][:5]
    successors = {r.json()["refresh_token"] for r in responses}
    assert len(successors) == 1
    revoked, rows = await _chain(db_engine, _session_id(pair["access_token"]))
    assert not revoked
    assert rows == 1
    # Every access token handed out works; the one successor is the live head of the chain.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for response in responses[:3]:
            token = response.json()["access_token"]
            me = await http.get("/me", headers=bearer(token))
            assert me.status_code == 200
        rotated = await http.post("/refresh", json={"refresh_token": successors.pop()})
        assert rotated.status_code == 200, rotated.text
    server.stop()
    assert "Traceback" not in server.output()


async def test_forty_concurrent_refreshes_across_two_instances_give_one_200(
    run_server: ServerFactory, server_database_url: str, db_engine: AsyncEngine
) -> None:
    # Two instances (same directory: same signing key) on one database, two workers each.
    env = {"AUTHSVC_DATABASE_URL": server_database_url}
    servers = [run_server(env=env, args=["--workers", "2"]) for _ in range(2)]

    responses, pair = await _race(*(server.url for server in servers))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 403: N - 1}, (statuses, [r.text for r in responses][:5])
    errors = Counter(r.json()["error"] for r in responses if r.status_code == 403)
    assert errors == {"refresh_token_reused": N - 1}
    revoked, successors = await _chain(db_engine, _session_id(pair["access_token"]))
    assert revoked
    assert successors == 1
    for server in servers:
        server.stop()
        assert "Traceback" not in server.output()
