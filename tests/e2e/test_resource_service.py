"""The example resource service (examples/resource_service) against a live ``authsvc serve``,
across a signing-key rotation."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.security.keys import generate_private_key, private_key_pem
from tests.conftest import PASSWORD, bearer, unique_username
from tests.e2e.processes import cli_env, free_port, start_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    path = ROOT / "examples" / "resource_service" / "resource_service.py"
    spec = importlib.util.spec_from_file_location("authsvc_example_resource_service", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load_example()


@asynccontextmanager
async def authsvc_server(
    port: int, *, database_url: str, data_dir: Path, cwd: Path, **env: str
) -> AsyncIterator[str]:
    """A real ``authsvc serve`` on ``port``; yields its base URL, stops it at exit."""
    server = await asyncio.to_thread(
        start_server,
        cwd,
        env=cli_env(database_url, data_dir, AUTHSVC_PURGE_INTERVAL_SECONDS="0", **env),
        port=port,
    )
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


@asynccontextmanager
async def resource_client(jwks_url: str, **config: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = example.create_app(example.VerifierConfig(jwks_url=jwks_url, **config))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://resource") as client:
        yield client


def write_key(path: Path) -> Path:
    path.write_bytes(private_key_pem(generate_private_key("ES256")))
    return path


async def sign_up(base: str) -> tuple[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base) as client:
        username = unique_username("rs")
        created = await client.post("/register", json={"username": username, "password": PASSWORD})
        assert created.status_code == 201, created.text
        pair = await client.post("/login", json={"username": username, "password": PASSWORD})
        assert pair.status_code == 200
        return created.json()["id"], pair.json()


async def test_resource_service_verifies_tokens_across_a_key_rotation(
    database_url: str, key_dir: Path, tmp_path: Path, clean_db: AsyncEngine
) -> None:
    key_a, key_b = write_key(tmp_path / "a.pem"), write_key(tmp_path / "b.pem")
    port = free_port()
    server = {"database_url": database_url, "data_dir": key_dir, "cwd": tmp_path}
    jwks_url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async with resource_client(jwks_url, unknown_kid_cooldown_seconds=0) as resource:
        # 1. Key A signs.
        async with authsvc_server(port, AUTHSVC_JWT_PRIVATE_KEY_FILE=str(key_a), **server) as base:
            user_id, before = await sign_up(base)
            hello = await resource.get("/hello", headers=bearer(before["access_token"]))
            assert hello.status_code == 200, hello.text
            assert hello.json()["user_id"] == user_id

        # 2. Restart with B signing and A still published: nobody is logged out.
        async with authsvc_server(
            port,
            AUTHSVC_JWT_PRIVATE_KEY_FILE=str(key_b),
            AUTHSVC_JWT_PREVIOUS_KEY_FILES=str(key_a),
            AUTHSVC_INTROSPECTION_CLIENTS="resource:resource-secret",
            **server,
        ) as base:
            assert (
                await resource.get("/hello", headers=bearer(before["access_token"]))
            ).status_code == 200
            async with httpx.AsyncClient(base_url=base) as auth:
                jwks = (await auth.get("/.well-known/jwks.json")).json()["keys"]
                assert len(jwks) == 2
                assert (
                    await auth.get("/me", headers=bearer(before["access_token"]))
                ).status_code == 200
                rotated = await auth.post(
                    "/refresh", json={"refresh_token": before["refresh_token"]}
                )
                assert rotated.status_code == 200
                after = rotated.json()
            assert (
                jwt.get_unverified_header(after["access_token"])["kid"]
                != (jwt.get_unverified_header(before["access_token"])["kid"])
            )
            # A kid the cached set lacks makes the resource service fetch the JWKS again.
            hello = await resource.get("/hello", headers=bearer(after["access_token"]))
            assert hello.status_code == 200, hello.text
            assert hello.json()["user_id"] == user_id
            # A fresh verifier (nothing cached) takes both keys too.
            async with resource_client(jwks_url) as cold:
                for pair in (before, after):
                    assert (
                        await cold.get("/hello", headers=bearer(pair["access_token"]))
                    ).status_code == 200

            # Logout is not visible in the JWT itself; introspection tells.
            async with httpx.AsyncClient(base_url=base) as auth:
                assert (
                    await auth.post("/logout", json={"refresh_token": after["refresh_token"]})
                ).status_code == 204
                info = await auth.post(
                    "/introspect",
                    data={"token": after["access_token"]},
                    auth=("resource", "resource-secret"),
                )
                assert info.json() == {"active": False}


async def test_resource_service_refuses_what_is_not_an_access_token(
    database_url: str, key_dir: Path, tmp_path: Path, clean_db: AsyncEngine
) -> None:
    key = write_key(tmp_path / "a.pem")
    port = free_port()
    jwks_url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    async with authsvc_server(
        port,
        AUTHSVC_JWT_PRIVATE_KEY_FILE=str(key),
        database_url=database_url,
        data_dir=key_dir,
        cwd=tmp_path,
    ) as _base:
        _user_id, pair = await sign_up(_base)
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        header = jwt.get_unverified_header(pair["access_token"])
        public_pem = (
            serialization.load_pem_private_key(key.read_bytes(), password=None)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        b64 = base64.urlsafe_b64encode
        forged = {
            "refresh token": pair["refresh_token"],
            "garbage": "not-a-jwt",
            "alg none": jwt.encode(
                claims, None, algorithm="none", headers={"kid": header["kid"], "typ": "at+jwt"}
            ),
            "foreign key, our kid": jwt.encode(
                claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers=header
            ),
            "unknown kid": jwt.encode(
                claims,
                ec.generate_private_key(ec.SECP256R1()),
                algorithm="ES256",
                headers={**header, "kid": "nope"},
            ),
            "plain JWT typ": jwt.encode(
                claims,
                serialization.load_pem_private_key(key.read_bytes(), password=None),
                algorithm="ES256",
                headers={**header, "typ": "JWT"},
            ),
            "tampered payload": ".".join(
                [
                    pair["access_token"].split(".")[0],
                    b64(b'{"sub":"someone-else"}').rstrip(b"=").decode(),
                    pair["access_token"].split(".")[2],
                ]
            ),
        }
        # HMAC with the public key as the secret (the classic algorithm-confusion forgery).
        hs_header = b64(
            f'{{"alg":"HS256","typ":"at+jwt","kid":"{header["kid"]}"}}'.encode()
        ).rstrip(b"=")
        body = pair["access_token"].split(".")[1].encode()
        import hashlib
        import hmac

        mac = hmac.new(public_pem, hs_header + b"." + body, hashlib.sha256).digest()
        forged["HS256 with the public key"] = b".".join(
            [hs_header, body, b64(mac).rstrip(b"=")]
        ).decode()

        async with resource_client(jwks_url) as resource:
            assert (
                await resource.get("/hello", headers=bearer(pair["access_token"]))
            ).status_code == 200
            missing = await resource.get("/hello")
            assert missing.status_code == 401
            assert missing.json()["error"] == "not_authenticated"
            for name, token in forged.items():
                response = await resource.get("/hello", headers=bearer(token))
                assert response.status_code == 401, name
                assert response.json()["error"] == "invalid_token", name
                assert 'error="invalid_token"' in response.headers["www-authenticate"]

        for config in (
            {"audience": "another-service"},
            {"issuer": "someone-else"},
            {"algorithm": "EdDSA"},
        ):
            async with resource_client(jwks_url, **config) as strict:
                response = await strict.get("/hello", headers=bearer(pair["access_token"]))
                assert response.status_code == 401, config
                assert response.json()["error"] == "invalid_token"

    # The issuer is gone and nothing is cached: 503, not a 401 that blames the client.
    async with resource_client(jwks_url) as orphan:
        response = await orphan.get("/hello", headers=bearer(pair["access_token"]))
        assert response.status_code == 503
