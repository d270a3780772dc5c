"""The audit trail the HTTP interface (and the admin commands) leave behind: one table with a
scenario per event type, each checking who, from where and when the row says, and that no
row holds a secret. A new event type without a scenario here fails the suite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.cli import app as cli_app
from authsvc.models import AuditEvent
from authsvc.services.events import EventType
from tests.conftest import PASSWORD, ClientFactory, FakeClock, bearer, login, register

ADDRESS = "203.0.113.7"  # the test client's address (tests/conftest.py)
WRONG = "not the password at all"


@dataclass
class World:
    client: AsyncClient
    clock: FakeClock
    cli: Callable[..., Awaitable[None]]
    # Everything no audit row may contain.
    secrets: list[str] = field(default_factory=lambda: [PASSWORD, WRONG])

    async def user(self) -> tuple[uuid.UUID, str]:
        body = await register(self.client)
        return uuid.UUID(body["id"]), body["username"]

    async def login(self, username: str) -> tuple[dict[str, Any], uuid.UUID]:
        pair = await login(self.client, username)
        self.secrets += [pair["access_token"], pair["refresh_token"]]
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        return pair, uuid.UUID(claims["sid"])

    async def refresh(self, token: str, error: str | None = None) -> Any:
        """Refresh with ``token``: a success, or the refusal ``error``."""
        response = await self.client.post("/refresh", json={"refresh_token": token})
        body = response.json()
        if error is not None:
            assert body["error"] == error, response.text
            return body
        assert response.status_code == 200, response.text
        self.secrets += [body["access_token"], body["refresh_token"]]
        return body


# What a scenario expects: the rows of its event type, in order, field by field.
Expected = list[dict[str, Any]]
Scenario = Callable[[World], Awaitable[Expected]]
SCENARIOS: dict[EventType, tuple[dict[str, Any], Scenario]] = {}


def scenario(kind: EventType, **settings: Any) -> Callable[[Scenario], Scenario]:
    def register_scenario(fn: Scenario) -> Scenario:
        SCENARIOS[kind] = (settings, fn)
        return fn

    return register_scenario


@scenario(EventType.USER_REGISTERED)
async def _registered(w: World) -> Expected:
    user_id, name = await w.user()
    return [{"user_id": user_id, "username": name, "occurred_at": w.clock.now}]


@scenario(EventType.REGISTRATION_THROTTLED, register_max_per_address=1)
async def _registration_throttled(w: World) -> Expected:
    await w.user()
    body = {"username": "second-try", "password": PASSWORD}
    response = await w.client.post("/register", json=body)
    assert response.status_code == 429
    # The username asked for is not recorded: nobody was registered.
    return [{"user_id": None, "username": None, "ip_address": ADDRESS}]


@scenario(EventType.LOGIN_SUCCEEDED)
async def _login_succeeded(w: World) -> Expected:
    user_id, name = await w.user()
    _, sid = await w.login(name)
    return [{"user_id": user_id, "username": name, "session_id": sid, "ip_address": ADDRESS}]


@scenario(EventType.LOGIN_FAILED)
async def _login_failed(w: World) -> Expected:
    user_id, name = await w.user()
    wrong = await w.client.post("/login", json={"username": name, "password": WRONG})
    ghost = await w.client.post("/login", json={"username": "ghost-user", "password": PASSWORD})
    assert (wrong.status_code, ghost.status_code) == (401, 401)
    # The username typed for an unknown user is often a password typed into the wrong
    # field: like the logs, the trail keeps it out.
    w.secrets.append("ghost-user")
    return [
        {"user_id": user_id, "username": name, "detail": "wrong_password", "session_id": None},
        {"user_id": None, "username": None, "detail": "unknown_user", "ip_address": ADDRESS},
    ]


@scenario(EventType.LOGIN_THROTTLED, login_max_attempts=1)
async def _login_throttled(w: World) -> Expected:
    user_id, name = await w.user()
    await w.client.post("/login", json={"username": name, "password": WRONG})
    response = await w.client.post("/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 429
    return [{"user_id": user_id, "username": name, "session_id": None, "ip_address": ADDRESS}]


@scenario(EventType.LOGIN_DISABLED)
async def _login_disabled(w: World) -> Expected:
    user_id, name = await w.user()
    await w.cli("disable-user", name)
    response = await w.client.post("/login", json={"username": name, "password": PASSWORD})
    assert response.json()["error"] == "account_disabled"
    return [{"user_id": user_id, "username": name, "session_id": None, "ip_address": ADDRESS}]


@scenario(EventType.REFRESH_ROTATED)
async def _rotated(w: World) -> Expected:
    user_id, name = await w.user()
    pair, sid = await w.login(name)
    w.clock.advance(5)
    await w.refresh(pair["refresh_token"])
    return [{"user_id": user_id, "session_id": sid, "occurred_at": w.clock.now}]


@scenario(EventType.REFRESH_GRACE, refresh_reuse_grace_seconds=30)
async def _grace(w: World) -> Expected:
    user_id, name = await w.user()
    pair, sid = await w.login(name)
    first = await w.refresh(pair["refresh_token"])
    assert (await w.refresh(pair["refresh_token"]))["refresh_token"] == first["refresh_token"]
    return [{"user_id": user_id, "session_id": sid, "ip_address": ADDRESS}]


@scenario(EventType.REFRESH_REUSED)
async def _reused(w: World) -> Expected:
    user_id, name = await w.user()
    pair, sid = await w.login(name)
    await w.refresh(pair["refresh_token"])
    await w.refresh(pair["refresh_token"], "refresh_token_reused")
    return [{"user_id": user_id, "session_id": sid, "detail": "session_revoked"}]


@scenario(EventType.REFRESH_EXPIRED, refresh_token_ttl_seconds=60)
async def _expired(w: World) -> Expected:
    user_id, name = await w.user()
    pair, sid = await w.login(name)
    w.clock.advance(61)
    await w.refresh(pair["refresh_token"], "refresh_token_expired")
    return [{"user_id": user_id, "session_id": sid, "occurred_at": w.clock.now}]


@scenario(EventType.REFRESH_REVOKED)
async def _revoked(w: World) -> Expected:
    user_id, name = await w.user()
    pair, sid = await w.login(name)
    ended = await w.client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    assert ended.status_code == 204
    await w.refresh(pair["refresh_token"], "refresh_token_revoked")
    return [{"user_id": user_id, "session_id": sid, "ip_address": ADDRESS}]


@scenario(EventType.REFRESH_INVALID)
async def _invalid(w: World) -> Expected:
    await w.refresh("not-a-token", "invalid_refresh_token")
    return [{"user_id": None, "session_id": None, "ip_address": ADDRESS}]


@scenario(EventType.SESSION_REVOKED)
async def _session_revoked(w: World) -> Expected:
    user_id, name = await w.user()
    _, phone = await w.login(name)
    laptop, laptop_sid = await w.login(name)
    ended = await w.client.delete(f"/sessions/{phone}", headers=bearer(laptop["access_token"]))
    assert ended.status_code == 204
    revoked = await w.client.post("/revoke", data={"token": laptop["refresh_token"]})
    assert revoked.status_code == 200
    return [
        {"user_id": user_id, "session_id": phone, "ip_address": ADDRESS},
        {
            "user_id": user_id,
            "session_id": laptop_sid,
            "detail": "refresh token revoked (RFC 7009)",
        },
    ]


@scenario(EventType.LOGOUT)
async def _logout(w: World) -> Expected:
    user_id, name = await w.user()
    first, sid = await w.login(name)
    second, _ = await w.login(name)
    await w.login(name)  # a third session, ended by /logout/all
    ended = await w.client.post("/logout", json={"refresh_token": first["refresh_token"]})
    assert ended.status_code == 204
    everything = await w.client.post("/logout/all", headers=bearer(second["access_token"]))
    assert everything.status_code == 204
    return [
        {"user_id": user_id, "session_id": sid, "ip_address": ADDRESS},
        {"user_id": user_id, "detail": "all sessions (2 revoked)", "ip_address": ADDRESS},
    ]


@scenario(EventType.USER_DISABLED)
async def _disabled(w: World) -> Expected:
    user_id, name = await w.user()
    await w.login(name)
    await w.login(name)
    await w.cli("disable-user", name)
    return [{"user_id": user_id, "username": name, "detail": "2 session(s) revoked"}]


@scenario(EventType.USER_ENABLED)
async def _enabled(w: World) -> Expected:
    user_id, name = await w.user()
    await w.cli("disable-user", name)
    await w.cli("enable-user", name)
    await w.login(name)  # it is enabled again
    return [{"user_id": user_id, "username": name, "session_id": None}]


async def events(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AuditEvent).order_by(AuditEvent.id))).all())


def test_every_event_type_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(EventType)


@pytest.mark.parametrize("kind", sorted(SCENARIOS), ids=str)
async def test_each_event_is_recorded_with_who_where_and_when_and_no_secret(
    kind: EventType,
    make_client: ClientFactory,
    clean_db: AsyncEngine,
    database_url: str,
    key_dir: Path,
) -> None:
    settings, play = SCENARIOS[kind]
    env = {"AUTHSVC_DATABASE_URL": database_url, "AUTHSVC_DATA_DIR": str(key_dir)}

    async def cli(*args: str) -> None:
        # The real command, in-process (on a thread: it runs its own event loop).
        result = await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=env)
        assert result.exit_code == 0, result.output

    clock = FakeClock()
    clock_start, started = clock.now, datetime.now(UTC)
    async with make_client(clock=clock, **settings) as client:
        world = World(client, clock, cli)
        expected = await play(world)
    finished = datetime.now(UTC)

    rows = await events(clean_db)
    mine = [row for row in rows if row.event == kind]
    assert len(mine) == len(expected), [tuple(row) for row in rows]
    for row, want in zip(mine, expected, strict=True):
        got = {name: getattr(row, name) for name in want}
        assert got == want
        # Requests are stamped with the service's clock (here the fake one); the admin
        # commands with the real one.
        at = row.occurred_at
        assert clock_start <= at <= clock.now or started <= at <= finished
    dump = repr([tuple(row) for row in rows])
    for secret in world.secrets:
        assert secret not in dump
