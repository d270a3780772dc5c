"""The audit trail the HTTP interface leaves behind (rows in audit_events)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuditEvent
from tests.conftest import PASSWORD, ClientFactory, bearer, login, register


async def events(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AuditEvent).order_by(AuditEvent.id))).all())


async def test_every_kind_of_event_is_recorded_without_secrets(
    make_client: ClientFactory, clean_db: AsyncEngine
) -> None:
    async with make_client(refresh_reuse_grace_seconds=30) as client:
        user = await register(client)
        await client.post(
            "/login", json={"username": user["username"], "password": "not the password"}
        )
        await client.post("/login", json={"username": "ghost-user", "password": PASSWORD})
        pair = await login(client, user["username"])
        first = (
            await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        ).json()
        retry = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert retry.status_code == 200  # grace retry
        second = (
            await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
        ).json()
        reused = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reused.json()["error"] == "refresh_token_reused"

        other = await login(client, user["username"])
        sessions = (await client.get("/sessions", headers=bearer(other["access_token"]))).json()
        third = await login(client, user["username"])
        assert (
            await client.delete(
                f"/sessions/{sessions[0]['id']}", headers=bearer(third["access_token"])
            )
        ).status_code == 204
        fourth = await login(client, user["username"])
        assert (
            await client.post("/revoke", data={"token": fourth["access_token"]})
        ).status_code == 200
        fifth = await login(client, user["username"])
        assert (
            await client.post("/logout", json={"refresh_token": fifth["refresh_token"]})
        ).status_code == 204
        assert (
            await client.post("/logout/all", headers=bearer(third["access_token"]))
        ).status_code == 204

    rows = await events(clean_db)
    kinds = [r.event for r in rows]
    for kind in (
        "user_registered",
        "login_failed",
        "login_succeeded",
        "refresh_rotated",
        "refresh_grace_retry",
        "refresh_reuse_detected",
        "session_revoked",
        "logout",
    ):
        assert kind in kinds, kind
    failed = [r for r in rows if r.event == "login_failed"]
    assert {r.detail for r in failed} == {"wrong_password", "unknown_user"}
    # The username typed for an unknown user is often a password typed into the wrong
    # field: like the logs, the trail keeps it out.
    assert {r.username for r in failed} == {user["username"], None}
    assert "ghost-user" not in repr([tuple(r) for r in rows])
    assert all(r.ip_address == "203.0.113.7" for r in rows if r.event != "user_registered")
    assert all(r.occurred_at is not None for r in rows)
    revoked = [r for r in rows if r.event == "session_revoked"]
    assert len(revoked) == 2
    assert all(r.session_id is not None and r.user_id is not None for r in revoked)
    logouts = [r for r in rows if r.event == "logout"]
    assert any(r.detail and r.detail.startswith("all sessions") for r in logouts)

    dump = repr(rows)
    for secret in (
        "not the password",
        PASSWORD,
        pair["refresh_token"],
        first["refresh_token"],
        second["refresh_token"],
        pair["access_token"],
        fifth["refresh_token"],
    ):
        assert secret not in dump
