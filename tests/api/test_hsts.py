"""``Strict-Transport-Security`` on every response that went over HTTPS (served with TLS, or
forwarded by a trusted proxy with ``X-Forwarded-Proto: https``), never on plain HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient, Response

from authsvc.config import Settings
from authsvc.main import create_app
from tests.conftest import PASSWORD, unique_username

PROXY = "10.0.0.5"
ONE_YEAR = 365 * 24 * 3600


def hsts_max_age(response: Response) -> int | None:
    values = response.headers.get_list("strict-transport-security")
    if not values:
        return None
    assert len(values) == 1, values
    match = re.fullmatch(r"max-age=(\d+)(; includeSubDomains)?(; preload)?", values[0])
    assert match, values[0]
    return int(match[1])


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings],
) -> Callable[..., Any]:
    @asynccontextmanager
    async def factory(
        *, scheme: str = "http", peer: str = "203.0.113.7", **overrides: Any
    ) -> AsyncIterator[AsyncClient]:
        app = create_app(make_settings(**overrides))
        async with LifespanManager(app) as manager:
            transport = ASGITransport(app=manager.app, client=(peer, 50000))
            async with AsyncClient(transport=transport, base_url=f"{scheme}://testserver") as c:
                yield c

    return factory


async def a_spread_of_responses(client: AsyncClient, **headers: str) -> list[Response]:
    """200s, 201, 401, 404, 405, 413 and 422: produced by routes, handlers and middleware."""
    username = unique_username("hsts")
    body = {"username": username, "password": PASSWORD}
    return [
        await client.get("/healthz", headers=headers),
        await client.get("/.well-known/jwks.json", headers=headers),
        await client.post("/register", json=body, headers=headers),
        await client.post("/login", json=body, headers=headers),
        await client.get("/me", headers=headers),
        await client.get("/no-such-path", headers=headers),
        await client.delete("/login", headers=headers),
        await client.post("/login", content=b"x" * 70_000, headers=headers),
        await client.post("/login", json={}, headers=headers),
    ]


EXPECTED_STATUSES = [200, 200, 201, 200, 401, 404, 405, 413, 422]


async def test_every_https_response_carries_hsts(make_client: Callable[..., Any]) -> None:
    async with make_client(scheme="https") as client:
        responses = await a_spread_of_responses(client)
    assert [r.status_code for r in responses] == EXPECTED_STATUSES
    for response in responses:
        max_age = hsts_max_age(response)
        assert max_age is not None, (response.request.url, response.status_code)
        assert max_age >= ONE_YEAR


async def test_plain_http_never_carries_hsts(make_client: Callable[..., Any]) -> None:
    async with make_client(scheme="http") as client:
        responses = await a_spread_of_responses(client)
    assert [r.status_code for r in responses] == EXPECTED_STATUSES
    assert [hsts_max_age(r) for r in responses] == [None] * len(responses)


async def test_untrusted_forwarded_proto_changes_nothing(make_client: Callable[..., Any]) -> None:
    # No trusted proxies at all, then a list that does not include this peer.
    for trusted in ([], ["10.0.0.0/24"]):
        async with make_client(trusted_proxies=trusted, peer="198.51.100.20") as client:
            responses = await a_spread_of_responses(client, **{"X-Forwarded-Proto": "https"})
        assert [hsts_max_age(r) for r in responses] == [None] * len(responses)


async def test_trusted_proxy_forwarding_https_gets_hsts(make_client: Callable[..., Any]) -> None:
    async with make_client(trusted_proxies=[PROXY], peer=PROXY) as client:
        responses = await a_spread_of_responses(client, **{"X-Forwarded-Proto": "https"})
        assert [r.status_code for r in responses] == EXPECTED_STATUSES
        for response in responses:
            assert (hsts_max_age(response) or 0) >= ONE_YEAR
        # The same proxy forwarding plain HTTP, or saying nothing: no HSTS.
        for headers in ({"X-Forwarded-Proto": "http"}, {}):
            response = await client.get("/healthz", headers=headers)
            assert hsts_max_age(response) is None


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("HTTPS", True),
        (" https ", True),
        # Only the rightmost value is the trusted proxy's; the rest came from further out.
        ("http, https", True),
        ("https, http", False),
        ("https,http", False),
        ("", False),
        ("wss", False),
    ],
)
async def test_forwarded_proto_is_read_from_the_right(
    make_client: Callable[..., Any], forwarded: str, expected: bool
) -> None:
    async with make_client(trusted_proxies=[PROXY], peer=PROXY) as client:
        response = await client.get("/healthz", headers={"X-Forwarded-Proto": forwarded})
    assert (hsts_max_age(response) is not None) is expected


async def test_hsts_header_is_sent_once(
    make_client: Callable[..., Any],
) -> None:
    async with make_client(scheme="https") as client:
        response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers.get_list("strict-transport-security") == ["max-age=63072000"]
