"""An off-the-shelf OAuth2 client library (Authlib's ``AsyncOAuth2Client``) against the
service, with no refresh code of ours: it discovers the endpoints from the RFC 8414
metadata, logs in with the password grant, refreshes by itself when the access token
expires, and revokes (RFC 7009)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from httpx2 import ASGITransport

from authsvc.config import Settings
from authsvc.main import create_app
from tests.conftest import PASSWORD, unique_username

ACCESS_TTL = 4


@pytest.fixture
async def transport(make_settings: Callable[..., Settings]) -> AsyncIterator[ASGITransport]:
    app = create_app(make_settings(access_token_ttl_seconds=ACCESS_TTL))
    async with LifespanManager(app) as manager:
        yield ASGITransport(app=manager.app, client=("203.0.113.9", 50000))


async def wait_until_expired(token: dict[str, Any]) -> None:
    """Sleep past the access token's expiry as the client computed it (``expires_at``)."""
    await asyncio.sleep(max(0.0, token["expires_at"] - time.time()) + 1.1)


@pytest.mark.slow  # authlib decides expiry on the real clock: waits ACCESS_TTL seconds
async def test_authlib_client_logs_in_refreshes_on_expiry_and_revokes(
    transport: ASGITransport,
) -> None:
    base = "http://testserver"
    async with httpx2.AsyncClient(transport=transport, base_url=base) as plain:
        username = unique_username("oauth")
        created = await plain.post("/register", json={"username": username, "password": PASSWORD})
        assert created.status_code == 201
        metadata = (await plain.get("/.well-known/oauth-authorization-server")).json()
    assert {"password", "refresh_token"} <= set(metadata["grant_types_supported"])
    assert "none" in metadata["token_endpoint_auth_methods_supported"]

    updates: list[dict[str, Any]] = []

    async def update_token(token: dict[str, Any], refresh_token: str | None = None) -> None:
        updates.append({"token": dict(token), "replaced": refresh_token})

    async with AsyncOAuth2Client(
        client_id="a-public-client",
        token_endpoint_auth_method="none",
        token_endpoint=metadata["token_endpoint"],
        update_token=update_token,
        leeway=1,  # the default (60 s) would refresh a 4-second token at every request
        transport=transport,
        base_url=base,
    ) as oauth:
        first = await oauth.fetch_token(
            metadata["token_endpoint"], username=username, password=PASSWORD
        )
        assert first["token_type"] == "bearer"
        assert first["expires_in"] == ACCESS_TTL

        me = await oauth.get("/me")
        assert me.status_code == 200, me.text
        assert me.json()["username"] == username
        assert updates == []  # still fresh: no refresh yet

        # Expired: the library refreshes on its own (refresh grant at the token endpoint).
        await wait_until_expired(first)
        me = await oauth.get("/me")
        assert me.status_code == 200, me.text
        assert len(updates) == 1
        assert updates[0]["replaced"] == first["refresh_token"]
        second = oauth.token
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]

        # Once more: the rotated token rotates again.
        await wait_until_expired(second)
        assert (await oauth.get("/me")).status_code == 200
        assert len(updates) == 2
        third = oauth.token

        # The spent refresh token is refused as RFC 6749 §5.2 says.
        with pytest.raises(OAuthError) as reused:
            await oauth.refresh_token(
                metadata["token_endpoint"], refresh_token=second["refresh_token"]
            )
        assert reused.value.error == "invalid_grant"
        # ... and that reuse revoked the session the library holds.
        revoked = await oauth.get("/me")
        assert revoked.status_code == 401
        assert revoked.json()["error"] == "invalid_token"
        with pytest.raises(OAuthError) as after_reuse:
            await oauth.refresh_token(metadata["token_endpoint"])
        assert after_reuse.value.error == "invalid_grant"
        assert oauth.token["refresh_token"] == third["refresh_token"]


async def test_authlib_client_revocation_ends_the_session(transport: ASGITransport) -> None:
    base = "http://testserver"
    username = unique_username("oauth")
    async with httpx2.AsyncClient(transport=transport, base_url=base) as plain:
        created = await plain.post("/register", json={"username": username, "password": PASSWORD})
        assert created.status_code == 201
    async with AsyncOAuth2Client(
        client_id="a-public-client",
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
        token_endpoint=f"{base}/login",
        leeway=1,  # the default (60 s) would refresh a 4-second token at every request
        transport=transport,
        base_url=base,
    ) as oauth:
        token = await oauth.fetch_token(f"{base}/login", username=username, password=PASSWORD)
        assert (await oauth.get("/me")).status_code == 200

        revoked = await oauth.revoke_token(
            f"{base}/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
        )
        assert revoked.status_code == 200
        me = await oauth.get("/me")
        assert me.status_code == 401
        assert me.json()["error"] == "invalid_token"
        with pytest.raises(OAuthError) as refused:
            await oauth.refresh_token(f"{base}/login")
        assert refused.value.error == "invalid_grant"

        # A wrong password through the library is the contract's 401, not an OAuth error.
        with pytest.raises(OAuthError) as wrong:
            await oauth.fetch_token(f"{base}/login", username=username, password="wrong" * 3)
        assert wrong.value.error == "invalid_credentials"
