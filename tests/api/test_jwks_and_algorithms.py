from __future__ import annotations

from typing import Any

import jwt
import pytest
from httpx import AsyncClient

from authsvc.security.keys import jwk_thumbprint
from tests.conftest import ClientFactory, bearer, login, register

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


@pytest.mark.parametrize(
    ("algorithm", "kty"), [("ES256", "EC"), ("EdDSA", "OKP"), ("RS256", "RSA")]
)
async def test_each_asymmetric_algorithm_signs_and_publishes_its_key(
    make_client: ClientFactory, algorithm: str, kty: str
) -> None:
    async with make_client(jwt_algorithm=algorithm) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        jwks = (await client.get("/.well-known/jwks.json")).json()
        me = await client.get("/me", headers=bearer(pair["access_token"]))
        rotated = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert me.status_code == 200
    assert rotated.status_code == 200
    [key] = jwks["keys"]
    assert key["kty"] == kty
    assert key["alg"] == algorithm
    assert key["use"] == "sig"
    assert not PRIVATE_MEMBERS & set(key)
    assert key["kid"] == jwk_thumbprint(key)  # RFC 7638
    header = jwt.get_unverified_header(pair["access_token"])
    assert header == {"alg": algorithm, "kid": key["kid"], "typ": "at+jwt"}
    # What another service does: verify with the published key, checking iss, aud, exp.
    public = jwt.PyJWK(key).key
    claims = jwt.decode(
        pair["access_token"], public, algorithms=[algorithm], audience="authsvc", issuer="authsvc"
    )
    assert claims["sub"] == user["id"]
    assert {"iss", "sub", "aud", "iat", "exp", "jti", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 1800


async def test_hs256_with_a_secret_publishes_no_keys(make_client: ClientFactory) -> None:
    secret = "s" * 40
    async with make_client(jwt_algorithm="HS256", jwt_secret=secret) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        jwks = (await client.get("/.well-known/jwks.json")).json()
        me = await client.get("/me", headers=bearer(pair["access_token"]))
    assert jwks == {"keys": []}
    assert me.status_code == 200
    claims = jwt.decode(pair["access_token"], secret, algorithms=["HS256"], audience="authsvc")
    assert claims["sub"] == user["id"]


async def test_token_of_another_algorithm_is_rejected(make_client: ClientFactory) -> None:
    async with make_client(jwt_algorithm="EdDSA") as client:
        user = await register(client)
        eddsa_token = (await login(client, user["username"]))["access_token"]
    async with make_client(jwt_algorithm="ES256") as client:
        response = await client.get("/me", headers=bearer(eddsa_token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_jwks_has_the_contract_shape(client: AsyncClient, tokens: dict[str, Any]) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert key["kid"] == jwt.get_unverified_header(tokens["access_token"])["kid"]
