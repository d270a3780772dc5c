"""``authsvc disable-user``, ``enable-user``, ``purge`` and ``audit``: the real command
against the test database, with the service answering over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from httpx import AsyncClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import (
    AuditEvent,
    AuthSession,
    KnownAddress,
    LoginFailure,
    RefreshToken,
    RegistrationAttempt,
)
from tests.conftest import PASSWORD, ClientFactory, bearer, login, register
from tests.e2e.processes import CliResult, cli_env, run_cli_async


class Cli:
    def __init__(self, database_url: str, data_dir: Path, cwd: Path) -> None:
        self.database_url, self.data_dir, self.cwd = database_url, data_dir, cwd

    async def __call__(self, *args: str) -> CliResult:
        return await run_cli_async(self.cwd, *args, env=cli_env(self.database_url, self.data_dir))


def where(database_url: str) -> str:
    """How the CLI names the database it acts on: a SQLite file's path, or the URL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return str(Path(str(url.database)).resolve())
    return url.render_as_string(hide_password=True)


def make_cli(database_url: str, key_dir: Path, tmp_path: Path) -> Cli:
    return Cli(database_url, key_dir, tmp_path)


async def test_disable_user_revokes_everything_and_enable_lets_them_back_in(
    client: AsyncClient, database_url: str, key_dir: Path, tmp_path: Path
) -> None:
    cli = make_cli(database_url, key_dir, tmp_path)
    user = await register(client)
    first = await login(client, user["username"])
    second = await login(client, user["username"])

    result = await cli("disable-user", user["username"].upper())
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        f"disabled {user['username']} in {where(database_url)}; revoked 2 session(s)"
    )

    for pair in (first, second):
        refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 403
        assert refreshed.json()["error"] == "refresh_token_revoked"
        me = await client.get("/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 401
        assert me.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in me.headers["www-authenticate"]
    denied = await client.post("/login", json={"username": user["username"], "password": PASSWORD})
    assert denied.status_code == 403
    assert denied.json()["error"] == "account_disabled"
    # A wrong password says nothing about the account's state.
    wrong = await client.post(
        "/login", json={"username": user["username"], "password": PASSWORD + "x"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"

    result = await cli("enable-user", user["username"])
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"enabled {user['username']} in {where(database_url)}"
    fresh = await login(client, user["username"])
    assert (await client.get("/me", headers=bearer(fresh["access_token"]))).status_code == 200
    # Enabling does not bring revoked sessions back.
    old = await client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert old.json()["error"] == "refresh_token_revoked"


async def test_disable_unknown_or_invalid_user_fails_with_one_line(
    database_url: str, key_dir: Path, tmp_path: Path, clean_db: AsyncEngine
) -> None:
    cli = make_cli(database_url, key_dir, tmp_path)
    unknown = await cli("disable-user", "nobody-here")
    assert unknown.code == 1
    assert unknown.stderr.strip() == (
        f"authsvc: error: no such user: nobody-here (in {where(database_url)})"
    )
    invalid = await cli("enable-user", "no")
    assert invalid.code == 2
    assert len(invalid.stderr.strip().splitlines()) == 1


async def _cap_session(engine: AsyncEngine, session_id: str, ago: timedelta) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(AuthSession)
            .where(AuthSession.id == uuid.UUID(session_id))
            .values(expires_at=datetime.now(UTC) - ago)
        )


def _sid(pair: dict[str, Any]) -> str:
    import jwt

    sid: str = jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"]
    return sid


async def _count(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_purge_deletes_only_capped_sessions_and_stale_failures(
    client: AsyncClient, database_url: str, key_dir: Path, tmp_path: Path, clean_db: AsyncEngine
) -> None:
    cli = make_cli(database_url, key_dir, tmp_path)
    user = await register(client)
    live = await login(client, user["username"])
    capped = await login(client, user["username"])
    # A revoked session still inside its cap is reuse-detection evidence: it stays.
    reused = await login(client, user["username"])
    rotated = await client.post("/refresh", json={"refresh_token": reused["refresh_token"]})
    assert rotated.status_code == 200
    replay = await client.post("/refresh", json={"refresh_token": reused["refresh_token"]})
    assert replay.json()["error"] == "refresh_token_reused"
    await client.post("/refresh", json={"refresh_token": capped["refresh_token"]})
    await _cap_session(clean_db, _sid(capped), timedelta(seconds=5))

    now = datetime.now(UTC)
    async with clean_db.begin() as conn:
        await conn.execute(
            LoginFailure.__table__.insert(),
            [
                {
                    # Past every window, the account cap's 24 h included.
                    "username": "old",
                    "ip_address": "192.0.2.1",
                    "attempted_at": now - timedelta(days=1, seconds=60),
                },
                {
                    # Past the 5-minute window, but still counting toward the account cap.
                    "username": "account",
                    "ip_address": "192.0.2.1",
                    "attempted_at": now - timedelta(seconds=400),
                },
                {
                    "username": "new",
                    "ip_address": "192.0.2.1",
                    "attempted_at": now - timedelta(seconds=10),
                },
            ],
        )

        # Registration attempts count for AUTHSVC_REGISTER_WINDOW_SECONDS (1 h).
        await conn.execute(
            RegistrationAttempt.__table__.insert(),
            [
                {"ip_address": "192.0.2.2", "attempted_at": now - timedelta(hours=1, seconds=5)},
                {"ip_address": "192.0.2.3", "attempted_at": now - timedelta(minutes=50)},
            ],
        )
        # The login above made its address known; one more, last used 31 days ago, is
        # past AUTHSVC_LOGIN_KNOWN_ADDRESS_DAYS (30).
        await conn.execute(
            KnownAddress.__table__.insert(),
            [
                {
                    "user_id": uuid.UUID(user["id"]),
                    "address_digest": "0" * 64,
                    "last_login_at": now - timedelta(days=31),
                }
            ],
        )

    result = await cli("purge")
    assert result.code == 0, result.stderr
    assert (
        result.stdout.strip() == "purged 1 session(s), 2 attempt record(s) and 1 known address(es)"
        f" from {where(database_url)}"
    )

    async with clean_db.connect() as conn:
        left = {str(i) for i in (await conn.execute(select(AuthSession.id))).scalars()}
        failures = set((await conn.execute(select(LoginFailure.username))).scalars())
        registrations = set((await conn.execute(select(RegistrationAttempt.ip_address))).scalars())
        known = list((await conn.execute(select(KnownAddress.address_digest))).scalars())
    assert left == {_sid(live), _sid(reused)}
    assert failures == {"account", "new"}
    assert "192.0.2.3" in registrations and "192.0.2.2" not in registrations
    assert len(known) == 1 and known[0] != "0" * 64
    orphans = await _count(
        clean_db,
        select(func.count())
        .select_from(RefreshToken)
        .where(RefreshToken.session_id == uuid.UUID(_sid(capped))),
    )
    assert orphans == 0

    # What stays keeps working the way it did.
    assert (
        await client.post("/refresh", json={"refresh_token": live["refresh_token"]})
    ).status_code == 200
    late = await client.post("/refresh", json={"refresh_token": reused["refresh_token"]})
    assert late.json()["error"] == "refresh_token_reused"

    again = await cli("purge")
    assert (
        again.stdout.strip() == "purged 0 session(s), 0 attempt record(s) and 0 known address(es)"
        f" from {where(database_url)}"
    )


async def test_background_purge_runs_in_the_app(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    import asyncio

    async with make_client(purge_interval_seconds=0.2) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        keep = await login(client, user["username"])
        await _cap_session(clean_db, _sid(pair), timedelta(seconds=1))
        query = (
            select(func.count())
            .select_from(AuthSession)
            .where(AuthSession.id == uuid.UUID(_sid(pair)))
        )
        for _ in range(150):  # up to 30 s on a busy machine; usually one interval
            if await _count(clean_db, query) == 0:
                break
            await asyncio.sleep(0.2)
        assert await _count(clean_db, query) == 0
        assert (await client.get("/me", headers=bearer(keep["access_token"]))).status_code == 200


async def test_audit_prints_the_trail_of_one_user(
    make_client: ClientFactory, database_url: str, key_dir: Path, tmp_path: Path
) -> None:
    cli = make_cli(database_url, key_dir, tmp_path)
    # Leaving the app's lifespan drains its audit writer: every event below is written.
    async with make_client() as client:
        user = await register(client)
        other = await register(client)
        await login(client, other["username"])
        bad = await client.post(
            "/login", json={"username": user["username"], "password": PASSWORD + "!"}
        )
        assert bad.status_code == 401
        pair = await login(client, user["username"])
        await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    assert (await cli("disable-user", user["username"])).code == 0
    assert (await cli("enable-user", user["username"])).code == 0

    result = await cli("audit", "--user", user["username"], "--since", "1h")
    assert result.code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    events = [line.split("\t")[1] for line in lines]
    assert events == [
        "user_registered",
        "login_failed",
        "login_succeeded",
        "refresh_rotated",
        "logout",
        "user_disabled",
        "user_enabled",
    ]
    assert all(f"user={user['username']}" in line for line in lines)
    assert "ip=203.0.113.7" in lines[2]
    assert other["username"] not in result.stdout
    for secret in (PASSWORD, pair["access_token"], pair["refresh_token"]):
        assert secret not in result.stdout

    everyone = await cli("audit")
    assert other["username"] in everyone.stdout
    future = await cli("audit", "--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert future.code == 0
    assert future.stdout == ""
    iso = await cli("audit", "--user", user["username"], "--since", "2000-01-01T00:00:00Z")
    assert iso.stdout.strip().splitlines() == lines


async def test_audit_rejects_a_bad_since(
    database_url: str, key_dir: Path, tmp_path: Path, clean_db: AsyncEngine
) -> None:
    result = await make_cli(database_url, key_dir, tmp_path)("audit", "--since", "yesterday-ish")
    assert result.code == 2
    assert result.stderr.startswith("authsvc: error: --since")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_audit_rows_never_hold_a_secret(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    async with make_client() as client:
        user = await register(client)
        pair = await login(client, user["username"])
        await client.post(
            "/login", json={"username": user["username"], "password": "wrong password here"}
        )
        await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse
    async with clean_db.connect() as conn:
        rows = (await conn.execute(select(AuditEvent))).all()
    dump = repr(rows)
    assert rows
    for secret in (PASSWORD, "wrong password here", pair["access_token"], pair["refresh_token"]):
        assert secret not in dump
    assert pair["refresh_token"].split(".")[2] not in dump
