"""Bodies schemathesis found or could find: each a 422 in the contract's shape, never 400/500."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from tests.conftest import PASSWORD


@pytest.mark.parametrize("path", ["/register", "/login", "/generateTokens", "/refresh"])
@pytest.mark.parametrize(
    "content",
    [
        b"s\x04\xd0\x81Z\xffd\xfe",
        b"\xff",
        b",\xc3",
        b'{"username": "al\xffce"}',
        b"{",
        b"[]",
        b"null",
        b"42",
    ],
)
async def test_undecodable_or_wrong_json_is_a_validation_error(
    client: AsyncClient, path: str, content: bytes
) -> None:
    response = await client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert isinstance(body["detail"], list)


@pytest.mark.parametrize(
    "body",
    [
        {"username": "nul\x00user", "password": PASSWORD},
        {"username": "a" * 65, "password": PASSWORD},
        {"username": "ünï", "password": PASSWORD},
        {"username": ["alice"], "password": PASSWORD},
    ],
)
@pytest.mark.parametrize("path", ["/register", "/login"])
async def test_usernames_the_database_cannot_hold_are_validation_errors(
    client: AsyncClient, path: str, body: dict[str, object]
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert PASSWORD not in response.text


async def test_nul_in_password_is_hashed_like_any_character(client: AsyncClient) -> None:
    body = {"username": "nulpassword", "password": "before\x00after and more"}
    assert (await client.post("/register", json=body)).status_code == 201
    assert (await client.post("/login", json=body)).status_code == 200
    truncated = {"username": "nulpassword", "password": "before"}
    assert (await client.post("/login", json=truncated)).status_code == 401


DEEP_JSON = "[" * 30_000 + "]" * 30_000  # under 64 KiB, deeper than the JSON parser goes


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/login", 422, "validation_error"), ("/revoke", 422, "validation_error")],
)
async def test_deeply_nested_json_is_a_clear_error(
    client: AsyncClient, path: str, status: int, code: str
) -> None:
    response = await client.post(
        path, content=DEEP_JSON, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["error"] == code


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/login", 422, "validation_error"), ("/revoke", 422, "validation_error")],
)
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=zz"]
)
async def test_broken_multipart_is_a_clear_error(
    client: AsyncClient, path: str, status: int, code: str, content_type: str
) -> None:
    response = await client.post(path, content=b"garbage", headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["error"] == code
