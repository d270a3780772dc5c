"""Login limits under bursts, against a real ``authsvc serve`` with the real argon2 cost.

Each burst sends many simultaneous attempts, each on its own connection, to a server with
two workers; the number of 401s is the number of passwords that were checked. Whatever the
interleaving, no limit may let through more checks than its number, on either database and
on either throttle store. After a burst, wrong guesses sent one at a time show how many
checks the window still had room for: together with the burst's 401s they make exactly the
limit (a refused attempt is not itself counted).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.db import Base
from tests.conftest import PASSWORD, unique_username
from tests.e2e.processes import Server, running_server
from tests.redis_support import REDIS_URL, require_redis

pytestmark = pytest.mark.slow

WRONG = "not the password at all"
BURST = 24
PAIR_LIMIT = 3
ADDRESS_LIMIT = 5
ACCOUNT_LIMIT = 6


@pytest.fixture(scope="module", params=["database", "redis"])
async def burst_server(
    request: pytest.FixtureRequest,
    database_url: str,
    db_engine: AsyncEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Server]:
    """``authsvc serve --workers 2`` with the default argon2 parameters and small limits,
    shared by this module's tests (each uses its own usernames and addresses).
    ``X-Forwarded-For`` from the test (127.0.0.1) is believed, so each attempt names its
    client address."""
    cwd = tmp_path_factory.mktemp("burst")
    env = {
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_DATA_DIR": str(cwd / "var"),
        "AUTHSVC_ENV": "test",
        "AUTHSVC_LOG_LEVEL": "warning",
        "AUTHSVC_TRUSTED_PROXIES": "127.0.0.1",
        "AUTHSVC_LOGIN_MAX_ATTEMPTS": str(PAIR_LIMIT),
        "AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": str(ADDRESS_LIMIT),
        "AUTHSVC_LOGIN_ACCOUNT_MAX_FAILURES": str(ACCOUNT_LIMIT),
        # A connection for every request of a burst: on a loaded machine, a burst that
        # waits over a second for a pooled connection gets 503s, which is not what this
        # measures.
        "AUTHSVC_DB_POOL_SIZE": str(BURST),
    }
    if request.param == "redis":
        require_redis()
        env |= {
            "AUTHSVC_REDIS_URL": REDIS_URL,
            "AUTHSVC_REDIS_KEY_PREFIX": f"authsvc-burst-{uuid.uuid4().hex}",
        }
    try:
        with running_server(cwd, env=env, args=["--workers", "2"]) as server:
            await warm_up(server.url)
            yield server
    finally:
        async with db_engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())


async def warm_up(url: str) -> None:
    """Fill both workers' connection pools first: a burst on a cold pool waits for new
    database connections and may get 503s, which says nothing about the limits."""
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        for _ in range(2):
            await asyncio.gather(*(http.get("/readyz") for _ in range(BURST)))


async def burst(url: str, attempts: Sequence[tuple[str, str, str]]) -> list[httpx.Response]:
    """``(username, password, address)`` attempts, all at once, each on its own connection."""
    async with httpx.AsyncClient(
        base_url=url,
        timeout=120,
        limits=httpx.Limits(max_connections=len(attempts), max_keepalive_connections=0),
    ) as http:
        return list(
            await asyncio.gather(
                *(
                    http.post(
                        "/login",
                        json={"username": username, "password": password},
                        headers={"X-Forwarded-For": address},
                    )
                    for username, password, address in attempts
                )
            )
        )


def checks(responses: Sequence[httpx.Response], label: str) -> int:
    statuses = [r.status_code for r in responses]
    print(f"{label}: {statuses.count(401)} x 401, {statuses.count(429)} x 429")
    assert set(statuses) <= {401, 429}, statuses
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"] == "too_many_attempts"
            assert int(response.headers["Retry-After"]) >= 1
    return statuses.count(401)


async def room_left(url: str, attempts: Sequence[tuple[str, str]], limit: int) -> int:
    """Wrong guesses ``(username, address)``, one at a time, until the first 429: how many
    were still checked. ``attempts`` vary what the limit in question does not count by, so
    that no other limit gets in the way."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for checked, (username, address) in enumerate(attempts[: limit + 1]):
            response = await http.post(
                "/login",
                json={"username": username, "password": WRONG},
                headers={"X-Forwarded-For": address},
            )
            if response.status_code == 429:
                return checked
            assert response.status_code == 401, response.text
    raise AssertionError(f"more than {limit} checks after the burst")


async def register(url: str, username: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        response = await http.post("/register", json={"username": username, "password": PASSWORD})
        assert response.status_code == 201, response.text


async def test_burst_for_one_username_from_one_address(burst_server: Server) -> None:
    url, username, address = burst_server.url, unique_username(), "198.51.100.1"
    await register(url, username)
    responses = await burst(url, [(username, WRONG, address)] * BURST)
    checked = checks(responses, f"{BURST} guesses, one username, one address")
    assert checked <= PAIR_LIMIT
    left = await room_left(url, [(username, address)] * (PAIR_LIMIT + 1), PAIR_LIMIT)
    assert checked + left == PAIR_LIMIT


async def test_burst_with_the_right_password_inside(burst_server: Server) -> None:
    # The owner's password, 20th of the burst, gets no more checks than the limit allows.
    url, username, address = burst_server.url, unique_username(), "198.51.100.2"
    await register(url, username)
    attempts = [(username, WRONG, address)] * BURST
    attempts[19] = (username, PASSWORD, address)
    responses = await burst(url, attempts)
    statuses = [r.status_code for r in responses]
    wrong = [s for i, s in enumerate(statuses) if i != 19]
    print(f"{BURST} with the right one inside: {statuses.count(401)} x 401, {statuses[19]}")
    assert set(wrong) <= {401, 429}, statuses
    assert statuses[19] in (200, 429), statuses
    assert wrong.count(401) <= PAIR_LIMIT


async def test_burst_for_one_username_from_many_addresses(burst_server: Server) -> None:
    url, username = burst_server.url, unique_username()
    await register(url, username)
    attempts = [(username, WRONG, f"203.0.113.{i}") for i in range(BURST)]
    checked = checks(await burst(url, attempts), f"{BURST} guesses from {BURST} addresses")
    assert checked <= ACCOUNT_LIMIT
    # Each follow-up from an address of its own: only the account cap is in play.
    fresh = [(username, f"192.0.2.{100 + i}") for i in range(ACCOUNT_LIMIT + 1)]
    assert checked + await room_left(url, fresh, ACCOUNT_LIMIT) == ACCOUNT_LIMIT


async def test_burst_for_many_usernames_from_one_address(burst_server: Server) -> None:
    url, address = burst_server.url, "198.51.100.3"
    attempts = [(unique_username("ghost"), WRONG, address) for _ in range(BURST)]
    checked = checks(await burst(url, attempts), f"{BURST} usernames from one address")
    assert checked <= ADDRESS_LIMIT
    # Each follow-up for a username of its own: only the per-address limit is in play.
    ghosts = [(unique_username("ghost"), address) for _ in range(ADDRESS_LIMIT + 1)]
    left = await room_left(url, ghosts, ADDRESS_LIMIT)
    assert checked + left == ADDRESS_LIMIT


async def test_burst_from_one_ipv6_prefix(burst_server: Server) -> None:
    # Every address of a /64 is one client: its own addresses do not multiply its budget.
    url, username = burst_server.url, unique_username()
    await register(url, username)
    attempts = [(username, WRONG, f"2001:db8:7:1::{i + 1:x}") for i in range(BURST)]
    checked = checks(await burst(url, attempts), f"{BURST} guesses from one IPv6 /64")
    assert checked <= PAIR_LIMIT
    other_hosts = [(username, f"2001:db8:7:1:ffff::{i + 1:x}") for i in range(PAIR_LIMIT + 1)]
    left = await room_left(url, other_hosts, PAIR_LIMIT)
    assert checked + left == PAIR_LIMIT
