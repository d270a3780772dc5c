"""GET /sessions, DELETE /sessions/{id}: what users see of their logins and how they end one."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import ClientFactory, FakeClock, bearer, login, register


async def test_sessions_lists_each_login_and_marks_the_current_one(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    phone = await client.post(
        "/login",
        json={"username": user["username"], "password": "correct horse battery staple"},
        headers={"User-Agent": "phone/1.0"},
    )
    laptop = await client.post(
        "/login",
        json={"username": user["username"], "password": "correct horse battery staple"},
        headers={"User-Agent": "laptop/2.0"},
    )
    response = await client.get("/sessions", headers=bearer(laptop.json()["access_token"]))
    assert response.status_code == 200
    sessions = response.json()
    assert len(sessions) == 2
    assert set(sessions[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip_address",
        "current",
    }
    by_agent = {s["user_agent"]: s for s in sessions}
    assert by_agent["laptop/2.0"]["current"] is True
    assert by_agent["phone/1.0"]["current"] is False
    for s in sessions:
        assert s["ip_address"] == "203.0.113.7"
        created = datetime.fromisoformat(s["created_at"])
        assert (
            created
            <= datetime.fromisoformat(s["last_used_at"])
            < datetime.fromisoformat(s["expires_at"])
        )
        uuid.UUID(s["id"])
    assert phone.status_code == 200


async def test_sessions_shows_only_the_callers_live_sessions(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    mine = await login(client, user["username"])
    ended = await login(client, user["username"])
    other = await register(client)
    await login(client, other["username"])
    assert (
        await client.post("/logout", json={"refresh_token": ended["refresh_token"]})
    ).status_code == 204

    sessions = (await client.get("/sessions", headers=bearer(mine["access_token"]))).json()
    assert len(sessions) == 1
    assert sessions[0]["current"] is True


async def test_refresh_updates_last_used_at(make_client: ClientFactory) -> None:
    clock = FakeClock()
    async with make_client(clock=clock) as client:
        tokens = await login(client, (await register(client))["username"])
        before = (await client.get("/sessions", headers=bearer(tokens["access_token"]))).json()[0]
        clock.advance(60)
        rotated = await client.post(
            "/refresh",
            json={"refresh_token": tokens["refresh_token"]},
            headers={"User-Agent": "later"},
        )
        after = (
            await client.get("/sessions", headers=bearer(rotated.json()["access_token"]))
        ).json()
    assert len(after) == 1
    assert after[0]["id"] == before["id"]
    assert after[0]["current"] is True
    used = datetime.fromisoformat(after[0]["last_used_at"])
    assert used - datetime.fromisoformat(before["last_used_at"]) == timedelta(seconds=60)
    assert after[0]["created_at"] == before["created_at"]


async def test_sessions_requires_a_bearer_token(client: AsyncClient) -> None:
    response = await client.get("/sessions")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    response = await client.get("/sessions", headers=bearer("not.a.token"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_delete_session_ends_it(client: AsyncClient, user: dict[str, Any]) -> None:
    mine = await login(client, user["username"])
    other_device = await login(client, user["username"])
    sessions = (await client.get("/sessions", headers=bearer(mine["access_token"]))).json()
    target = next(s["id"] for s in sessions if not s["current"])

    response = await client.delete(f"/sessions/{target}", headers=bearer(mine["access_token"]))
    assert response.status_code == 204
    assert response.content == b""
    refreshed = await client.post("/refresh", json={"refresh_token": other_device["refresh_token"]})
    assert refreshed.status_code == 403
    assert refreshed.json()["error"] == "refresh_token_revoked"
    me = await client.get("/me", headers=bearer(other_device["access_token"]))
    assert me.json()["error"] == "invalid_token"
    remaining = (await client.get("/sessions", headers=bearer(mine["access_token"]))).json()
    assert [s["id"] for s in remaining] != [target]
    assert len(remaining) == 1

    again = await client.delete(f"/sessions/{target}", headers=bearer(mine["access_token"]))
    assert again.status_code == 204


async def test_delete_own_current_session_logs_the_caller_out(
    client: AsyncClient, tokens: dict[str, Any]
) -> None:
    sessions = (await client.get("/sessions", headers=bearer(tokens["access_token"]))).json()
    response = await client.delete(
        f"/sessions/{sessions[0]['id']}", headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 204
    me = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    assert me.json()["error"] == "invalid_token"


async def test_delete_someone_elses_session_is_404(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    mine = await login(client, user["username"])
    other = await register(client)
    theirs = await login(client, other["username"])
    their_id = (await client.get("/sessions", headers=bearer(theirs["access_token"]))).json()[0][
        "id"
    ]

    response = await client.delete(f"/sessions/{their_id}", headers=bearer(mine["access_token"]))
    assert response.status_code == 404
    assert response.json()["error"] == "session_not_found"
    assert (await client.get("/me", headers=bearer(theirs["access_token"]))).status_code == 200


@pytest.mark.parametrize(
    "session_id", ["0b5e8d3c-6f2a-4c1e-9d7b-2a4f6e8c0d13", "not-a-uuid", "1", "%00", "x" * 300]
)
async def test_delete_unknown_or_malformed_session_is_404(
    client: AsyncClient, tokens: dict[str, Any], session_id: str
) -> None:
    response = await client.delete(
        f"/sessions/{session_id}", headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 404
    assert response.json()["error"] == "session_not_found"


async def test_delete_session_requires_a_bearer_token(client: AsyncClient) -> None:
    response = await client.delete(f"/sessions/{uuid.uuid4()}")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    client: AsyncClient, user: dict[str, Any]
) -> None:
    response = await client.post(
        "/login",
        json={"username": user["username"], "password": "correct horse battery staple"},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    sessions = (
        await client.get("/sessions", headers=bearer(response.json()["access_token"]))
    ).json()
    assert sessions[0]["ip_address"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        ("203.0.113.7", "198.51.100.1", "198.51.100.1"),
        ("203.0.113.0/24", "198.51.100.1", "198.51.100.1"),
        # The client prepends a made-up hop; only the hop our proxy added counts.
        ("203.0.113.7", "10.9.9.9, 198.51.100.1", "198.51.100.1"),
        # Two trusted proxies in a row: the first untrusted address from the right.
        ("203.0.113.7,192.0.2.10", "198.51.100.1, 192.0.2.10", "198.51.100.1"),
        ("192.0.2.1", "198.51.100.1", "203.0.113.7"),
        ("203.0.113.7", "not-an-address", "203.0.113.7"),
        # An IPv6 zone is free text of any length: dropped, the address normalised.
        ("203.0.113.7", "FE80:0::1%" + "a" * 100, "fe80::1"),
    ],
)
async def test_forwarded_for_from_a_trusted_proxy(
    make_client: ClientFactory, trusted: str, forwarded: str, expected: str
) -> None:
    async with make_client(trusted_proxies=trusted) as client:
        user = await register(client)
        response = await client.post(
            "/login",
            json={"username": user["username"], "password": "correct horse battery staple"},
            headers={"X-Forwarded-For": forwarded},
        )
        assert response.status_code == 200
        sessions = (
            await client.get("/sessions", headers=bearer(response.json()["access_token"]))
        ).json()
        assert sessions[0]["ip_address"] == expected
