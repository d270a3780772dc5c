"""Signing-key rotation without logging anyone out: restart with key B current and key A
listed in AUTHSVC_JWT_PREVIOUS_KEY_FILES; A's tokens keep working, the JWKS lists both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from authsvc.security.keys import generate_private_key, private_key_pem
from tests.conftest import ClientFactory, bearer, login, register
from tests.e2e.processes import cli_env, run_cli_async


def write_key(path: Path, algorithm: str = "ES256") -> Path:
    path.write_bytes(private_key_pem(generate_private_key(algorithm)))
    return path


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
async def test_tokens_signed_before_a_rotation_keep_working(
    make_client: ClientFactory, tmp_path: Path, algorithm: str
) -> None:
    key_a, key_b = (
        write_key(tmp_path / "a.pem", algorithm),
        write_key(tmp_path / "b.pem", algorithm),
    )
    async with make_client(jwt_algorithm=algorithm, jwt_private_key_file=key_a) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        kid_a = kid_of(pair["access_token"])
        spare = await login(client, user["username"])

    async with make_client(
        jwt_algorithm=algorithm, jwt_private_key_file=key_b, jwt_previous_key_files=str(key_a)
    ) as client:
        jwks = (await client.get("/.well-known/jwks.json")).json()["keys"]
        kids = [k["kid"] for k in jwks]
        assert kid_a in kids
        assert len(kids) == 2
        assert all(k["alg"] == algorithm and k["use"] == "sig" and "d" not in k for k in jwks)

        me = await client.get("/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        rotated = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200
        new = rotated.json()
        kid_b = kid_of(new["access_token"])
        assert kid_b != kid_a
        assert kid_b in kids
        assert kid_of(new["refresh_token"]) == kid_b
        assert (await client.get("/me", headers=bearer(new["access_token"]))).status_code == 200
        assert (
            await client.post("/refresh", json={"refresh_token": new["refresh_token"]})
        ).status_code == 200

        # Reuse detection still recognises the rotated token signed under A.
        reused = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reused.status_code == 403
        assert reused.json()["error"] == "refresh_token_reused"

        fresh = await login(client, user["username"])
        assert kid_of(fresh["access_token"]) == kid_b

    # Once A is dropped, what it signed is no longer accepted.
    async with make_client(jwt_algorithm=algorithm, jwt_private_key_file=key_b) as client:
        jwks = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert [k["kid"] for k in jwks] == [kid_b]
        me = await client.get("/me", headers=bearer(spare["access_token"]))
        assert me.status_code == 401
        assert me.json()["error"] == "invalid_token"
        refreshed = await client.post("/refresh", json={"refresh_token": spare["refresh_token"]})
        assert refreshed.status_code == 403
        assert refreshed.json()["error"] == "invalid_refresh_token"


async def test_grace_retry_across_a_rotation_gets_the_same_token(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    key_a, key_b = write_key(tmp_path / "a.pem"), write_key(tmp_path / "b.pem")
    async with make_client(jwt_private_key_file=key_a, refresh_reuse_grace_seconds=60) as client:
        user = await register(client)
        pair = await login(client, user["username"])
        first = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert first.status_code == 200
    async with make_client(
        jwt_private_key_file=key_b,
        jwt_previous_key_files=str(key_a),
        refresh_reuse_grace_seconds=60,
    ) as client:
        retry = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert retry.status_code == 200
        assert retry.json()["refresh_token"] == first.json()["refresh_token"]
        onward = await client.post(
            "/refresh", json={"refresh_token": retry.json()["refresh_token"]}
        )
        assert onward.status_code == 200


async def test_several_previous_keys(make_client: ClientFactory, tmp_path: Path) -> None:
    keys = [write_key(tmp_path / f"{n}.pem") for n in "abc"]
    pairs = []
    for key in keys[:2]:
        async with make_client(jwt_private_key_file=key) as client:
            user = await register(client)
            pairs.append(await login(client, user["username"]))
    async with make_client(
        jwt_private_key_file=keys[2], jwt_previous_key_files=f"{keys[0]}, {keys[1]}"
    ) as client:
        assert len((await client.get("/.well-known/jwks.json")).json()["keys"]) == 3
        for pair in pairs:
            assert (
                await client.get("/me", headers=bearer(pair["access_token"]))
            ).status_code == 200


@pytest.mark.slow  # runs `authsvc serve`
async def test_serve_refuses_an_unreadable_or_mismatched_previous_key(
    database_url: str, key_dir: Path, tmp_path: Path
) -> None:
    current = write_key(tmp_path / "current.pem")
    rsa = write_key(tmp_path / "rsa.pem", "RS256")
    for previous, message in (
        (tmp_path / "missing.pem", "cannot read"),
        (rsa, "does not fit ES256"),
    ):
        result = await run_cli_async(
            tmp_path,
            "serve",
            "--port",
            "1",
            env=cli_env(
                database_url,
                key_dir,
                AUTHSVC_JWT_PRIVATE_KEY_FILE=str(current),
                AUTHSVC_JWT_PREVIOUS_KEY_FILES=str(previous),
            ),
        )
        assert result.code == 2
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


async def test_previous_key_files_are_refused_with_hs256(
    make_settings: Any, tmp_path: Path
) -> None:
    from asgi_lifespan import LifespanManager

    from authsvc.main import create_app
    from authsvc.security.keys import KeyConfigError

    settings = make_settings(
        jwt_algorithm="HS256",
        jwt_secret="s" * 40,
        jwt_previous_key_files=str(write_key(tmp_path / "a.pem")),
    )
    with pytest.raises(KeyConfigError, match="HS256"):
        async with LifespanManager(create_app(settings)):
            pass
