"""One body reader for every endpoint: JSON by Content-Type (a form where the endpoint takes
one), 415 otherwise; the same malformed body gets the same answer everywhere; validation
messages are sentences about the contract's fields."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import PASSWORD, ClientFactory, login, register, unique_username

CLIENT = ("fuzz", "a-client-secret")
JSON_ONLY = ["/register", "/generateTokens", "/refresh", "/logout"]
FORM_TOO = ["/login", "/revoke", "/introspect"]
EVERY = JSON_ONLY + FORM_TOO
# What must never reach a client: a regular expression, a class name, a parser's position.
LEAKS = re.compile(
    r"\^\[|\]\+\$|Request\b|instance of|line \d+ column|char \d+|position \d+|json_invalid.*form"
)


@pytest.fixture
async def http(make_client: ClientFactory) -> Any:
    async with make_client(introspection_clients=[":".join(CLIENT)]) as client:
        yield client


async def post(http: AsyncClient, path: str, **kwargs: Any) -> Any:
    auth = CLIENT if path == "/introspect" else None
    return await http.post(path, auth=auth, **kwargs)


@pytest.mark.parametrize("path", EVERY)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "text/json", None], ids=str
)
async def test_a_body_that_is_not_json_or_a_form_is_415(
    http: AsyncClient, path: str, content_type: str | None
) -> None:
    user = await register(http)
    body = json.dumps({"username": user["username"], "password": PASSWORD, "token": "x"})
    headers = {"Content-Type": content_type} if content_type else {}
    response = await post(http, path, content=body.encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert "application/json" in response.json()["detail"]
    assert "access_token" not in response.text


async def test_text_plain_json_does_not_log_in(http: AsyncClient) -> None:
    user = await register(http)
    body = json.dumps({"username": user["username"], "password": PASSWORD})
    response = await http.post("/login", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    ok = await http.post("/login", content=body, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200
    vendor = "application/vnd.example+json; charset=utf-8"
    also = await http.post("/login", content=body, headers={"Content-Type": vendor})
    assert also.status_code == 200


@pytest.mark.parametrize("path", JSON_ONLY)
async def test_a_form_where_only_json_is_taken_is_415(http: AsyncClient, path: str) -> None:
    response = await http.post(path, data={"username": "alice", "refresh_token": "x"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"username": "al', b"\xff\xfe", b"[1, 2", b'{"a": 1,}'],
    ids=["open-brace", "cut", "not-utf8", "cut-array", "trailing-comma"],
)
async def test_the_same_malformed_body_gets_the_same_answer_everywhere(
    http: AsyncClient, content: bytes
) -> None:
    answers = set()
    for path in EVERY:
        response = await post(
            http, path, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)
        answers.add((response.status_code, response.text))
    assert len(answers) == 1, answers
    body = json.loads(answers.pop()[1])
    assert body == {
        "error": "validation_error",
        "detail": [{"type": "json_invalid", "loc": ["body"], "msg": "The body is not valid JSON."}],
    }


@pytest.mark.parametrize("path", ["/register", "/login"])
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "The body must be a JSON object."),
        ([], "The body must be a JSON object."),
        ("alice", "The body must be a JSON object."),
        ({"username": "al", "password": PASSWORD}, "The username must be 3 to 64 characters"),
        ({"username": "a b c", "password": PASSWORD}, "ASCII letters, digits and . _ - @"),
        ({"username": "x" * 65, "password": PASSWORD}, "The username must be 3 to 64 characters"),
        ({"username": 42, "password": PASSWORD}, "The username must be a string."),
        ({"password": PASSWORD}, "The username is required."),
        ({"username": "alice"}, "The password is required."),
        ({"username": "alice", "password": None}, "The password must be a string."),
        ({"username": "alice", "password": "a\ud800b" * 5}, "valid Unicode text"),
    ],
    ids=[
        "null",
        "array",
        "string",
        "short-username",
        "space-in-username",
        "long-username",
        "number-username",
        "no-username",
        "no-password",
        "null-password",
        "lone-surrogate",
    ],
)
async def test_validation_messages_are_sentences_about_the_fields(
    http: AsyncClient, path: str, body: object, expected: str
) -> None:
    response = await http.post(
        path, content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "validation_error"
    messages = [issue["msg"] for issue in payload["detail"]]
    assert any(expected in m for m in messages), messages
    assert not LEAKS.search(response.text), response.text
    for issue in payload["detail"]:
        assert set(issue) == {"type", "loc", "msg"}


async def test_a_broken_multipart_body_is_reported_as_a_form(http: AsyncClient) -> None:
    response = await http.post(
        "/login", content=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=z"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "form_invalid", "loc": ["body"], "msg": "The form body could not be parsed."}
    ]


@pytest.mark.parametrize("length", [11, 129, 200, 2_000, 60_000])
async def test_any_password_outside_the_range_is_weak_password(
    http: AsyncClient, length: int
) -> None:
    password = ("Zq7!" * length)[:length]
    response = await http.post(
        "/register", json={"username": unique_username(), "password": password}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "weak_password"
    assert response.json()["detail"] in (
        "The password must be at least 12 characters long.",
        "The password must be at most 128 characters long.",
    )
    assert password not in response.text


async def test_an_empty_password_is_weak_password_at_register(http: AsyncClient) -> None:
    response = await http.post("/register", json={"username": unique_username(), "password": ""})
    assert response.status_code == 422
    assert response.json()["error"] == "weak_password"


async def test_login_takes_passwords_up_to_1024_characters(http: AsyncClient) -> None:
    user = await register(http)
    long_wrong = await http.post(
        "/login", json={"username": user["username"], "password": "x" * 1024}
    )
    assert long_wrong.status_code == 401
    too_long = await http.post(
        "/login", json={"username": user["username"], "password": "x" * 1025}
    )
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["msg"] == (
        "The password must be at most 1024 characters long."
    )


@pytest.mark.parametrize("path", ["/generateTokens", "/refresh", "/logout"])
@pytest.mark.parametrize("content", [b"", b"null", b"{}"], ids=["empty", "null", "object"])
async def test_no_token_in_the_body_and_no_cookie_says_so(
    http: AsyncClient, path: str, content: bytes
) -> None:
    response = await http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "missing",
            "loc": ["body", "refresh_token"],
            "msg": "A refresh token is required, in the body or the authsvc_refresh cookie.",
        }
    ]


async def test_a_null_body_falls_back_to_the_cookie(make_client: ClientFactory) -> None:
    async with make_client(cookie_secure=False) as http:
        user = await register(http)
        logged_in = await http.post(
            "/login?transport=cookie", json={"username": user["username"], "password": PASSWORD}
        )
        assert logged_in.status_code == 200
        refreshed = await http.post(
            "/refresh", content=b"null", headers={"Content-Type": "application/json"}
        )
        assert refreshed.status_code == 200, refreshed.text
        assert "authsvc_refresh=" in refreshed.headers["set-cookie"]


async def test_the_openapi_document_states_what_the_server_accepts(
    make_client: ClientFactory,
) -> None:
    async with make_client(password_min_length=14) as http:
        document = (await http.get("/openapi.json")).json()
        pair = await login(http, (await register(http, password=PASSWORD))["username"])
        assert pair["access_token"]
    paths = document["paths"]
    register_schema = paths["/register"]["post"]["requestBody"]["content"]
    assert list(register_schema) == ["application/json"]
    password = register_schema["application/json"]["schema"]["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (14, 128)
    for path in ("/generateTokens", "/refresh", "/logout"):
        body = paths[path]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        assert body["required"] is True
        assert schema["required"] == ["refresh_token"]
        assert "null" not in json.dumps(schema)
    login_schemas = paths["/login"]["post"]["requestBody"]["content"]
    assert set(login_schemas) == {"application/json", "application/x-www-form-urlencoded"}
    password_grant = login_schemas["application/json"]["schema"]["anyOf"][0]
    assert password_grant["properties"]["username"]["pattern"] == "^[A-Za-z0-9._@-]+$"
    assert password_grant["properties"]["password"]["maxLength"] == 1024
    for path in EVERY:
        assert "415" in paths[path]["post"]["responses"], path
