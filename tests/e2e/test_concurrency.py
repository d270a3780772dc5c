"""40 simultaneous refreshes of one token against real servers (one instance with several
workers, or several instances on one database), on PostgreSQL and on SQLite (one writer at
a time, same outcome). The same race in-process, on separate pooled connections, is
tests/integration/test_rotation_race.py (the fast path runs that one)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Race:
    instances: int  # `authsvc serve` processes on one database, sharing one signing key
    workers: int  # --workers of each
    grace: int  # AUTHSVC_REFRESH_REUSE_GRACE_SECONDS
    backends: tuple[str, ...] = ("sqlite", "postgresql")


# Every race of one refresh token against real servers, in one table. (Two single-worker
# instances on one SQLite file can still answer 503 when a writer waits past the busy
# timeout; those rows run on PostgreSQL, as they always have.)
RACES = {
    "one-instance-4-workers": Race(instances=1, workers=4, grace=0),
    "one-instance-4-workers-grace": Race(instances=1, workers=4, grace=30),
    "two-instances-2-workers": Race(instances=2, workers=2, grace=0),
    "two-instances-1-worker": Race(instances=2, workers=1, grace=0, backends=("postgresql",)),
    "two-instances-1-worker-grace": Race(
        instances=2, workers=1, grace=10, backends=("postgresql",)
    ),
}


@pytest.mark.parametrize(
    ("backend", "race"),
    [
        pytest.param(backend, race, id=f"{backend}-{name}")
        for name, race in RACES.items()
        for backend in race.backends
    ],
    indirect=["backend"],
)
async def test_forty_concurrent_refreshes_of_one_token(
    run_server: ServerFactory, server_database_url: str, db_engine: AsyncEngine, race: Race
) -> None:
    """Without grace: one 200 and N-1 `refresh_token_reused`, the session revoked. Within
    grace: N 200s with one successor, the live head of the chain. One successor either way."""
    env = {
        "AUTHSVC_DATABASE_URL": server_database_url,
        "AUTHSVC_REFRESH_REUSE_GRACE_SECONDS": str(race.grace),
    }
    servers = [
        run_server(env=env, args=["--workers", str(race.workers)]) for _ in range(race.instances)
    ]
    urls = [server.url for server in servers]

    responses, pair = await _race(*urls)

    statuses = Counter(r.status_code for r in responses)
    revoked, successors = await _chain(db_engine, _session_id(pair["access_token"]))
    assert successors == 1
    if race.grace == 0:
        assert statuses == {200: 1, 403: N - 1}, (statuses, [r.text for r in responses][:5])
        errors = Counter(r.json()["error"] for r in responses if r.status_code == 403)
        assert errors == {"refresh_token_reused": N - 1}
        assert revoked
    else:
        assert statuses == {200: N}, [r.text for r in responses if r.status_code != 200][:5]
        heads = {r.json()["refresh_token"] for r in responses}
        assert len(heads) == 1
        assert not revoked
        # Every access token handed out works at every instance; the one successor is the
        # live head of the chain.
        async with httpx.AsyncClient(timeout=30) as http:
            for response, url in zip(responses[:4], urls * 4, strict=False):
                me = await http.get(f"{url}/me", headers=bearer(response.json()["access_token"]))
                assert me.status_code == 200
            rotated = await http.post(f"{urls[-1]}/refresh", json={"refresh_token": heads.pop()})
            assert rotated.status_code == 200, rotated.text
    for server in servers:
        server.stop()
        assert "Traceback" not in server.output()
        assert '" 500' not in server.output()
