"""The hot routes' plain cases skip FastAPI's dependency solving (api.fastpath): they answer
exactly as the declared routes do, every other case still runs the declared route, and a
refresh never runs twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

import authsvc.api.fastpath as fastpath
import authsvc.api.security as security
from authsvc.models import AuditEvent, AuthSession
from tests.conftest import (
    ONLY_POSTGRESQL,
    PASSWORD,
    ClientFactory,
    FakeClock,
    bearer,
    login,
    register,
)


class Calls:
    """Counts the calls of a module's function (the module's own name for it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
        self.count = 0
        original: Callable[..., Any] = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def _comparable(response: Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in response.headers.items() if k != "x-request-id")
    return response.status_code, headers, response.content


async def test_me_takes_the_fast_way_and_answers_as_the_declared_route(
    make_client: ClientFactory, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, declared = (
        Calls(monkeypatch, fastpath, "authenticate"),
        Calls(monkeypatch, security, "authenticate"),
    )
    async with make_client() as client:
        user = await register(client)
        tokens = await login(client, user["username"])
        quick = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert (fast.count, declared.count) == (1, 0)
    # A dependency override (here a clock at the real time) sends it the declared way.
    async with make_client(clock=FakeClock(datetime.now(UTC))) as client:
        slow = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert (fast.count, declared.count) == (1, 1)
    assert quick.json() == user
    assert _comparable(quick) == _comparable(slow)


async def test_a_refused_bearer_falls_back_to_the_declared_route(
    client: AsyncClient,
    tokens: dict[str, Any],
    clean_db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast, declared = (
        Calls(monkeypatch, fastpath, "authenticate"),
        Calls(monkeypatch, security, "authenticate"),
    )
    async with clean_db.begin() as conn:
        await conn.execute(update(AuthSession).values(revoked_at=func.now(), revoked_reason="t"))
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"] == 'Bearer realm="authsvc", error="invalid_token"'
    assert (fast.count, declared.count) == (1, 1)
    # Lower-case scheme, extra spaces: the fast way reads the header as the declared one does.
    for value in (f"bearer {tokens['access_token']}", f"Bearer   {tokens['access_token']}  "):
        response = await client.get("/me", headers={"Authorization": value})
        assert response.status_code == 401


async def test_refresh_takes_the_fast_way_and_answers_as_the_declared_route(
    make_client: ClientFactory, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client() as client:
        user = await register(client)
        first = await login(client, user["username"])
        fast = Calls(monkeypatch, fastpath, "auth_service")
        quick = await client.post("/generateTokens", json={"refresh_token": first["refresh_token"]})
        assert fast.count == 1
        alias = await client.post("/refresh", json={"refresh_token": quick.json()["refresh_token"]})
        assert fast.count == 2
        second = await login(client, user["username"])  # the fast way too
        assert fast.count == 3
    async with make_client(clock=FakeClock(datetime.now(UTC))) as client:
        slow = await client.post("/generateTokens", json={"refresh_token": second["refresh_token"]})
    assert fast.count == 3
    for response in (quick, alias, slow):
        assert response.status_code == 200, response.text
    assert sorted(quick.json()) == sorted(slow.json())
    assert quick.json()["token_type"] == "bearer"
    assert (quick.json()["expires_in"], quick.json()["refresh_expires_in"]) == (
        slow.json()["expires_in"],
        slow.json()["refresh_expires_in"],
    )
    headers = [k for k, _ in _comparable(quick)[1] if k != "content-length"]
    assert headers == [k for k, _ in _comparable(slow)[1] if k != "content-length"]
    assert quick.headers["cache-control"] == "no-store" and quick.headers["pragma"] == "no-cache"


@pytest.mark.parametrize(
    ("params", "body", "content_type"),
    [
        ({"transport": "cookie"}, "token", "application/json"),  # a query string
        ({}, "token", "text/plain"),  # not JSON: the declared route answers 415
        ({}, "null", "application/json"),  # no token in the body: the cookie's turn
        ({}, "{bad", "application/json"),  # malformed
    ],
)
async def test_other_refresh_requests_run_the_declared_route(
    client: AsyncClient,
    tokens: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    params: dict[str, str],
    body: str,
    content_type: str,
) -> None:
    fast = Calls(monkeypatch, fastpath, "auth_service")
    content = f'{{"refresh_token": "{tokens["refresh_token"]}"}}' if body == "token" else body
    response = await client.post(
        "/generateTokens", params=params, content=content, headers={"Content-Type": content_type}
    )
    assert fast.count == 0
    expected = {"application/json": 200 if params else 422, "text/plain": 415}[content_type]
    assert response.status_code == expected, response.text
    if params:
        assert "refresh_token" not in response.json()
        assert "authsvc_refresh" in response.cookies


async def test_a_refused_refresh_is_answered_by_the_fast_way_and_runs_once(
    make_client: ClientFactory, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client(refresh_reuse_grace_seconds=0) as client:
        user = await register(client)
        tokens = await login(client, user["username"])
        rotated = await client.post(
            "/generateTokens", json={"refresh_token": tokens["refresh_token"]}
        )
        assert rotated.status_code == 200
        fast = Calls(monkeypatch, fastpath, "auth_service")
        replay = await client.post(
            "/generateTokens", json={"refresh_token": tokens["refresh_token"]}
        )
    assert fast.count == 1
    assert replay.status_code == 403
    assert replay.json()["error"] == "refresh_token_reused"
    async with clean_db.connect() as conn:
        reused = (
            await conn.execute(
                select(func.count()).where(AuditEvent.event == "refresh_reuse_detected")
            )
        ).scalar_one()
        revoked = (await conn.execute(select(AuthSession.revoked_reason))).scalars().all()
    assert reused == 1  # one run of the use case: one event, one revocation
    assert revoked == ["reuse_detected"]


@ONLY_POSTGRESQL
async def test_a_load_larger_than_the_pool_is_served_in_turn(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    """One pooled connection, 40 clients asking without pause for two seconds, a pool
    timeout of 0.3 s: every request is answered 200. The checkout gate hands the connection
    out in arrival order (db.driver_connection); the pool's own queue let newcomers take it
    first, and a request that had waited longest could wait out the timeout (503)."""
    async with make_client(db_pool_size=1, db_pool_timeout_seconds=0.3) as client:
        user = await register(client)
        tokens = await login(client, user["username"])
        headers = bearer(tokens["access_token"])
        statuses: Counter[int] = Counter()
        deadline = asyncio.get_running_loop().time() + 2.0

        async def ask() -> None:
            while asyncio.get_running_loop().time() < deadline:
                statuses[(await client.get("/me", headers=headers)).status_code] += 1

        await asyncio.gather(*(ask() for _ in range(40)))
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 40


async def test_login_takes_the_fast_way_and_answers_as_the_declared_route(
    make_client: ClientFactory, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client() as client:
        user = await register(client)
        fast = Calls(monkeypatch, fastpath, "auth_service")
        credentials = {"username": user["username"], "password": PASSWORD}
        quick = await client.post("/login", json=credentials)
        assert fast.count == 1
        wrong = await client.post("/login", json={**credentials, "password": "not it at all"})
        assert fast.count == 2
    async with make_client(clock=FakeClock(datetime.now(UTC))) as client:
        slow = await client.post("/login", json=credentials)
        slow_wrong = await client.post("/login", json={**credentials, "password": "not it at all"})
    assert fast.count == 2
    assert quick.status_code == slow.status_code == 200
    assert sorted(quick.json()) == sorted(slow.json())
    headers = [k for k, _ in _comparable(quick)[1] if k != "content-length"]
    assert headers == [k for k, _ in _comparable(slow)[1] if k != "content-length"]
    assert _comparable(wrong) == _comparable(slow_wrong)  # 401, same body and headers
    async with clean_db.connect() as conn:
        failed = select(func.count()).where(AuditEvent.event == "login_failed")
        assert (await conn.execute(failed)).scalar_one() == 2  # one per wrong password


@pytest.mark.parametrize(
    ("params", "form", "expected"),
    [
        ({"transport": "cookie"}, False, 200),  # a query string
        ({}, True, 200),  # a form
    ],
)
async def test_other_logins_run_the_declared_route(
    client: AsyncClient,
    user: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    params: dict[str, str],
    form: bool,
    expected: int,
) -> None:
    fast = Calls(monkeypatch, fastpath, "auth_service")
    credentials = {"username": user["username"], "password": PASSWORD}
    if form:
        response = await client.post("/login", params=params, data=credentials)
    else:
        response = await client.post("/login", params=params, json=credentials)
    assert fast.count == 0
    assert response.status_code == expected, response.text


async def test_the_refresh_grant_at_login_runs_the_declared_route(
    client: AsyncClient, tokens: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = Calls(monkeypatch, fastpath, "auth_service")
    response = await client.post(
        "/login", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert fast.count == 0
    assert response.status_code == 200, response.text
