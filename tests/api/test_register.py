from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import PASSWORD, ClientFactory, register, unique_username


async def test_register_returns_the_new_user(client: AsyncClient) -> None:
    name = unique_username("Alice")
    response = await client.post("/register", json={"username": name, "password": PASSWORD})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "created_at"}
    assert body["username"] == name.lower()
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


async def test_usernames_are_case_insensitive(client: AsyncClient) -> None:
    name = unique_username("bob")
    await register(client, name)
    response = await client.post("/register", json={"username": name.upper(), "password": PASSWORD})
    assert response.status_code == 409
    assert response.json() == {"error": "username_taken", "detail": response.json()["detail"]}


@pytest.mark.parametrize(
    "username",
    ["ab", "x" * 65, "has space", "semi;colon", "ünicode", "nul\x00byte", "", "tab\tname"],
)
async def test_malformed_username_is_a_validation_error(client: AsyncClient, username: str) -> None:
    response = await client.post("/register", json={"username": username, "password": PASSWORD})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert isinstance(body["detail"], list)


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short pw", "at least 12"),
        ("p" * 129, "at most 128"),
        ("my name is {name} ok", "username"),
    ],
)
async def test_weak_password_names_the_rule(client: AsyncClient, password: str, rule: str) -> None:
    name = unique_username("carol")
    password = password.format(name=name.upper())
    response = await client.post("/register", json={"username": name, "password": password})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "weak_password"
    assert rule in body["detail"]
    assert password not in body["detail"]


async def test_password_of_128_unicode_characters_is_accepted_whole(client: AsyncClient) -> None:
    password = "é" * 127 + "x"  # 128 characters, 255 bytes: never truncated
    user = await register(client, password=password)
    ok = await client.post("/login", json={"username": user["username"], "password": password})
    assert ok.status_code == 200
    wrong = await client.post(
        "/login", json={"username": user["username"], "password": password[:-1] + "y"}
    )
    assert wrong.status_code == 401


async def test_validation_errors_never_echo_the_password(client: AsyncClient) -> None:
    secret = "s3cret-\ud800-surrogate"
    response = await client.post(
        "/register",
        content=(b'{"username": "dave1", "password": "s3cret-\\ud800-surrogate"}'),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert "s3cret" not in response.text
    assert secret not in response.text


async def test_registration_can_be_closed(make_client: ClientFactory) -> None:
    async with make_client(allow_registration=False) as client:
        response = await client.post(
            "/register", json={"username": unique_username(), "password": PASSWORD}
        )
    assert response.status_code == 403
    assert response.json()["error"] == "registration_disabled"


async def test_malformed_json_is_a_validation_error(client: AsyncClient) -> None:
    response = await client.post(
        "/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_body_over_64_kib_is_refused_before_parsing(client: AsyncClient) -> None:
    payload: dict[str, Any] = {"username": "erin1", "password": "x" * (64 * 1024)}
    response = await client.post("/register", json=payload)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_streamed_body_over_64_kib_is_counted_not_trusted(client: AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"username": "frank1", "password": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}'

    # No Content-Length: the body arrives chunked and must be counted as it streams in.
    response = await client.post(
        "/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_lying_content_length_is_counted(client: AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"z" * 4096

    response = await client.post(
        "/register",
        content=chunks(),
        headers={"Content-Type": "application/json", "Content-Length": "10"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/login", "application/x-www-form-urlencoded"),
        ("/login", "multipart/form-data; boundary=xyz"),
        ("/revoke", "application/x-www-form-urlencoded"),
        ("/register", "text/plain"),
        ("/login", "application/json"),
    ],
)
async def test_chunked_body_over_64_kib_is_413_whatever_its_content_type(
    client: AsyncClient, path: str, content_type: str
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"username=alice&password="
        for _ in range(20):
            yield b"p" * 4096

    response = await client.post(path, content=chunks(), headers={"Content-Type": content_type})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
