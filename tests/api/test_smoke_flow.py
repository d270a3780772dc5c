from __future__ import annotations

from typing import Any

from httpx import AsyncClient


async def test_login_me_refresh_reuse_flow(client: AsyncClient, user: dict[str, Any], tokens: dict[str, Any]) -> None:
    me = await client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == user["username"]

    rotated = await client.post("/generateTokens", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] != tokens["refresh_token"]

    reused = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reused.status_code == 403
    assert reused.json()["error"] == "refresh_token_reused"
