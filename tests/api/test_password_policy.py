"""The password policy (README, *Abuse resistance*) at /register: 422 ``weak_password``
naming the rule."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from tests.conftest import ClientFactory, unique_username


async def refused(client: AsyncClient, password: str, username: str | None = None) -> str:
    username = username or unique_username()
    response = await client.post("/register", json={"username": username, "password": password})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "weak_password"
    assert isinstance(body["detail"], str)
    assert password not in response.text
    detail: str = body["detail"]
    return detail


async def test_too_short_names_the_minimum(client: AsyncClient) -> None:
    assert "at least 12 characters" in await refused(client, "Tr0ub4dor&3")


async def test_minimum_follows_configuration(make_client: ClientFactory) -> None:
    async with make_client(password_min_length=16) as client:
        assert "at least 16 characters" in await refused(client, "fifteen chars!!")
        ok = await client.post(
            "/register", json={"username": unique_username(), "password": "sixteen chars!!!"}
        )
        assert ok.status_code == 201, ok.text


async def test_128_characters_accepted_and_129_refused(client: AsyncClient) -> None:
    assert "at most 128 characters" in await refused(client, "x7" * 64 + "y")
    username = unique_username()
    password = "".join(chr(ord("a") + i % 26) for i in range(128))
    response = await client.post("/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    ok = await client.post("/login", json={"username": username, "password": password})
    assert ok.status_code == 200


@pytest.mark.parametrize("position", [99, 127])
async def test_every_character_counts_no_truncation(client: AsyncClient, position: int) -> None:
    username = unique_username()
    password = "".join(chr(ord("a") + i % 26) for i in range(128))
    response = await client.post("/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    altered = password[:position] + "#" + password[position + 1 :]
    response = await client.post("/login", json={"username": username, "password": altered})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"


async def test_password_containing_the_username_is_refused(client: AsyncClient) -> None:
    username = unique_username("carol")
    assert "username" in await refused(client, f"my {username.upper()} secret", username)
    assert "username" in await refused(client, username + "x", username)


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "qwerty123456",
        "1qaz2wsx3edc",
        "Password1234",
        " QAZWSXEDCRFV",
        "123123123123",
    ],
)
async def test_common_passwords_are_refused_at_the_default_length(
    client: AsyncClient, password: str
) -> None:
    assert "too common" in await refused(client, password)


async def test_common_short_password_refused_when_minimum_allows_it(
    make_client: ClientFactory,
) -> None:
    async with make_client(password_min_length=6) as client:
        assert "too common" in await refused(client, "dragon")
        assert "too common" in await refused(client, "letmein")


@pytest.mark.parametrize(
    "password", ["correct horse battery staple", "ünïcødé pässwörd ✓", "🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑"]
)
async def test_long_uncommon_passwords_any_unicode_are_accepted(
    client: AsyncClient, password: str
) -> None:
    username = unique_username()
    response = await client.post("/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    ok = await client.post("/login", json={"username": username, "password": password})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice"},
        {"username": "alice", "password": 12345678901234},
        {"username": "alice", "password": None},
        {"username": "alice", "password": ""},
        {"username": "alice", "password": "x" * 1025},
    ],
)
async def test_malformed_password_is_a_validation_error(
    client: AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/register", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_lone_surrogate_password_is_a_validation_error(client: AsyncClient) -> None:
    # Valid JSON, but no UTF-8 string (nor argon2 input) can hold it.
    response = await client.post(
        "/register",
        content=b'{"username": "alice", "password": "\\ud800 lone surrogate!"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
