from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from httpx import AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuthSession, User
from authsvc.security.keys import development_key_path, load_private_key_file
from tests.conftest import bearer

REALM = 'Bearer realm="authsvc"'
INVALID = f'{REALM}, error="invalid_token"'


async def test_me_returns_the_user(
    client: AsyncClient, user: dict[str, Any], tokens: dict[str, Any]
) -> None:
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json() == user


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"]
)
async def test_missing_or_non_bearer_credentials(client: AsyncClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response.headers["www-authenticate"] == REALM


async def test_expired_access_token(
    client: AsyncClient, settings: Any, tokens: dict[str, Any]
) -> None:
    key = load_private_key_file(development_key_path(settings), "ES256")
    payload = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    payload.update(iat=int(time.time()) - 100, exp=int(time.time()) - 10)
    expired = jwt.encode(
        payload, key.signer, algorithm="ES256", headers={"typ": "at+jwt", "kid": key.kid}
    )
    response = await client.get("/me", headers=bearer(expired))
    assert response.status_code == 401
    assert response.json()["error"] == "token_expired"
    assert response.headers["www-authenticate"] == (
        f'{REALM}, error="invalid_token", error_description="The access token expired"'
    )


def _forgeries(settings: Any, access: str) -> dict[str, str]:
    key = load_private_key_file(development_key_path(settings), "ES256")
    header = jwt.get_unverified_header(access)
    payload = jwt.decode(access, options={"verify_signature": False})
    pem = key.verifier.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def signed(claims: dict[str, Any], **head: Any) -> str:
        return jwt.encode(claims, key.signer, algorithm="ES256", headers={**header, **head})

    def hmac_with(secret: bytes) -> str:
        # Sign by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret.
        import hashlib
        import hmac
        import json

        h = base64.urlsafe_b64encode(json.dumps({**header, "alg": "HS256"}).encode()).rstrip(b"=")
        p = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
        sig = base64.urlsafe_b64encode(
            hmac.new(secret, h + b"." + p, hashlib.sha256).digest()
        ).rstrip(b"=")
        return (h + b"." + p + b"." + sig).decode()

    head, body, sig = access.split(".")
    evil_body = base64.urlsafe_b64encode(b'{"sub":"x"}').rstrip(b"=").decode()
    none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    return {
        "alg_none": f"{none_head}.{body}.",
        "hs256_with_public_key_pem": hmac_with(pem),
        "tampered_payload": f"{head}.{evil_body}.{sig}",
        "tampered_signature": f"{head}.{body}.{sig[::-1]}",
        "wrong_typ": signed(payload, typ="JWT"),
        "wrong_iss": signed({**payload, "iss": "someone-else"}),
        "wrong_aud": signed({**payload, "aud": "another-service"}),
        "unknown_kid": signed(payload, kid="not-our-key"),
        "missing_sid": signed({k: v for k, v in payload.items() if k != "sid"}),
        "sub_not_a_user_id": signed({**payload, "sub": "not-a-uuid"}),
        "truncated": access[: len(access) // 2],
        "not_base64": "###.$$$.%%%",
    }


FORGERY_NAMES = [
    "alg_none",
    "hs256_with_public_key_pem",
    "tampered_payload",
    "tampered_signature",
    "wrong_typ",
    "wrong_iss",
    "wrong_aud",
    "unknown_kid",
    "missing_sid",
    "sub_not_a_user_id",
    "truncated",
    "not_base64",
]


@pytest.mark.parametrize("forgery", FORGERY_NAMES)
async def test_forged_access_tokens_are_rejected(
    client: AsyncClient, settings: Any, tokens: dict[str, Any], forgery: str
) -> None:
    forged = _forgeries(settings, tokens["access_token"])[forgery]
    response = await client.get("/me", headers=bearer(forged))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"] == INVALID


async def test_revoked_session_rejects_its_access_token(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(
            update(AuthSession).values(revoked_at=datetime.now(UTC), revoked_reason="test")
        )
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_disabled_user_rejects_a_live_access_token(
    client: AsyncClient, tokens: dict[str, Any], clean_db: AsyncEngine
) -> None:
    async with clean_db.begin() as conn:
        await conn.execute(update(User).values(disabled_at=datetime.now(UTC)))
    response = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_unknown_path_uses_the_error_shape(client: AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_wrong_method_uses_the_error_shape(client: AsyncClient) -> None:
    response = await client.delete("/me")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
