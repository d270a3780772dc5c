"""GET /.well-known/oauth-authorization-server (RFC 8414)."""

from __future__ import annotations

from httpx import AsyncClient

from tests.conftest import ClientFactory


async def test_metadata_uses_the_request_base_url_by_default(client: AsyncClient) -> None:
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    body = response.json()
    assert body["issuer"] == "authsvc"
    assert body["jwks_uri"] == "http://testserver/.well-known/jwks.json"
    assert body["token_endpoint"] == "http://testserver/login"
    assert body["revocation_endpoint"] == "http://testserver/revoke"
    assert body["introspection_endpoint"] == "http://testserver/introspect"
    assert body["grant_types_supported"] == ["password", "refresh_token"]
    assert body["token_endpoint_auth_methods_supported"] == ["none"]
    assert body["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]


async def test_metadata_uses_public_url_and_custom_issuer(make_client: ClientFactory) -> None:
    async with make_client(
        public_url="https://auth.example.com/base/", issuer="https://auth.example.com"
    ) as client:
        body = (await client.get("/.well-known/oauth-authorization-server")).json()
        assert body["issuer"] == "https://auth.example.com"
        assert body["jwks_uri"] == "https://auth.example.com/base/.well-known/jwks.json"
        assert body["token_endpoint"] == "https://auth.example.com/base/login"
        assert body["revocation_endpoint"] == "https://auth.example.com/base/revoke"
        assert body["introspection_endpoint"] == "https://auth.example.com/base/introspect"


async def test_metadata_urls_resolve(client: AsyncClient) -> None:
    body = (await client.get("/.well-known/oauth-authorization-server")).json()
    jwks = await client.get(body["jwks_uri"])
    assert jwks.status_code == 200
    assert jwks.json()["keys"]
    revoke = await client.post(body["revocation_endpoint"], data={"token": "x"})
    assert revoke.status_code == 200


async def test_every_new_route_documents_its_error_codes(client: AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert (
        "session_not_found"
        in paths["/sessions/{session_id}"]["delete"]["responses"]["404"]["description"]
    )
    assert "invalid_client" in paths["/introspect"]["post"]["responses"]["401"]["description"]
    assert "invalid_request" in paths["/revoke"]["post"]["responses"]["400"]["description"]
    assert "not_authenticated" in paths["/logout/all"]["post"]["responses"]["401"]["description"]
    assert "validation_error" in paths["/logout"]["post"]["responses"]["422"]["description"]
    assert "invalid_token" in paths["/sessions"]["get"]["responses"]["401"]["description"]
