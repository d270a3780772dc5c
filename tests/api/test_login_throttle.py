"""The login throttle through the HTTP interface, on both databases and on Redis.

Client addresses other than the test client's own come from ``X-Forwarded-For``, believed
because the test client's address is configured as a trusted proxy.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import AsyncClient, Response

from authsvc.security.passwords import PasswordHasher
from tests.conftest import PASSWORD, ClientFactory, register, unique_username
from tests.redis_support import REDIS_URL, require_redis

PROXY = "203.0.113.7"


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "redis":
        require_redis()
    return name


@pytest.fixture
def throttled_client(make_client: ClientFactory, store: str) -> Callable[..., Any]:
    """``make_client`` with the throttle in ``store``; Redis keys get a per-test prefix."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[AsyncClient]:
        if store == "redis":
            overrides = {
                "redis_url": REDIS_URL,
                "redis_key_prefix": f"authsvc-test-{uuid.uuid4().hex}",
                **overrides,
            }
        async with make_client(trusted_proxies=[PROXY], **overrides) as client:
            yield client

    return factory


async def attempt(
    client: AsyncClient,
    username: str,
    password: str = "wrong password!",  # noqa: S107
    *,
    address: str = "198.51.100.1",
) -> Response:
    return await client.post(
        "/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )


def assert_throttled(response: Response, window: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "too_many_attempts"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window


async def test_max_failures_throttle_the_username_even_with_the_right_password(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client() as client:
        user = await register(client)
        for _ in range(5):
            response = await attempt(client, user["username"])
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_credentials"
        assert_throttled(await attempt(client, user["username"], PASSWORD), 300)
        # Case-folded like everything about usernames.
        assert_throttled(await attempt(client, user["username"].upper(), PASSWORD), 300)


async def test_unknown_username_is_throttled_like_a_real_one(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client(login_max_attempts=3) as client:
        ghost = unique_username("ghost")
        for _ in range(3):
            assert (await attempt(client, ghost)).status_code == 401
        assert_throttled(await attempt(client, ghost), 300)


async def test_throttle_leaves_other_usernames_and_addresses_alone(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client(login_max_attempts=3) as client:
        victim, bystander = await register(client), await register(client)
        for _ in range(3):
            await attempt(client, victim["username"], address="198.51.100.1")
        assert_throttled(
            await attempt(client, victim["username"], PASSWORD, address="198.51.100.1"), 300
        )
        # Another username from the same address, and the same username from elsewhere.
        ok = await attempt(client, bystander["username"], PASSWORD, address="198.51.100.1")
        assert ok.status_code == 200, ok.text
        ok = await attempt(client, victim["username"], PASSWORD, address="198.51.100.2")
        assert ok.status_code == 200, ok.text


async def test_per_address_limit_spans_usernames(throttled_client: Callable[..., Any]) -> None:
    async with throttled_client(login_max_attempts_per_address=4) as client:
        user = await register(client)
        for _ in range(4):
            assert (
                await attempt(client, unique_username("stuffed"), address="198.51.100.9")
            ).status_code == 401
        assert_throttled(
            await attempt(client, user["username"], PASSWORD, address="198.51.100.9"), 300
        )
        ok = await attempt(client, user["username"], PASSWORD, address="198.51.100.10")
        assert ok.status_code == 200, ok.text


async def test_account_cap_counts_failures_from_all_addresses(
    throttled_client: Callable[..., Any],
) -> None:
    # NIST SP 800-63B: no more than 100 consecutive failures per account (the default).
    async with throttled_client() as client:
        user = await register(client)
        for i in range(100):
            # 4 per address: below the per-username-and-address limit of 5.
            response = await attempt(client, user["username"], address=f"198.51.100.{i // 4}")
            assert response.status_code == 401, (i, response.text)
        assert_throttled(
            await attempt(client, user["username"], PASSWORD, address="192.0.2.1"), 86400
        )
        other = await register(client)
        assert (
            await attempt(client, other["username"], PASSWORD, address="192.0.2.1")
        ).status_code == 200


async def test_account_cap_resets_on_success(throttled_client: Callable[..., Any]) -> None:
    async with throttled_client(login_account_max_failures=3) as client:
        user = await register(client)
        for i in range(2):
            await attempt(client, user["username"], address=f"198.51.100.{i}")
        assert (
            await attempt(client, user["username"], PASSWORD, address="192.0.2.1")
        ).status_code == 200
        for i in range(2):
            await attempt(client, user["username"], address=f"198.51.100.{10 + i}")
        assert (
            await attempt(client, user["username"], PASSWORD, address="192.0.2.2")
        ).status_code == 200
        for i in range(3):
            await attempt(client, user["username"], address=f"198.51.100.{20 + i}")
        assert_throttled(
            await attempt(client, user["username"], PASSWORD, address="192.0.2.3"), 86400
        )


async def test_throttle_lifts_when_the_window_passes(throttled_client: Callable[..., Any]) -> None:
    async with throttled_client(login_max_attempts=2, login_window_seconds=1) as client:
        user = await register(client)
        for _ in range(2):
            await attempt(client, user["username"])
        assert_throttled(await attempt(client, user["username"], PASSWORD), 1)
        await asyncio.sleep(1.5)
        assert (await attempt(client, user["username"], PASSWORD)).status_code == 200


async def test_successful_logins_do_not_count(throttled_client: Callable[..., Any]) -> None:
    async with throttled_client(login_max_attempts=2) as client:
        user = await register(client)
        for _ in range(6):
            assert (await attempt(client, user["username"], PASSWORD)).status_code == 200


async def test_throttled_attempt_costs_no_hash(
    throttled_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with throttled_client(login_max_attempts=2) as client:
        user = await register(client)
        for _ in range(2):
            await attempt(client, user["username"])
        calls: list[str] = []

        async def verify(
            self: PasswordHasher, password: str, password_hash: str
        ) -> tuple[bool, None]:
            calls.append("verify")
            return False, None

        async def dummy(self: PasswordHasher, password: str) -> None:
            calls.append("dummy")

        monkeypatch.setattr(PasswordHasher, "verify_and_update", verify)
        monkeypatch.setattr(PasswordHasher, "dummy_verify", dummy)
        for name in (user["username"], user["username"]):
            assert_throttled(await attempt(client, name, PASSWORD), 300)
        assert calls == []
        # The same patch does count an attempt that is not throttled.
        await attempt(client, unique_username("ghost"))
        assert calls == ["dummy"]


async def test_concurrent_burst_ends_throttled_without_errors(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client() as client:
        user = await register(client)
        burst = await asyncio.gather(*(attempt(client, user["username"]) for _ in range(20)))
        statuses = sorted(r.status_code for r in burst)
        assert set(statuses) <= {401, 429}, statuses
        assert statuses.count(401) >= 5
        assert_throttled(await attempt(client, user["username"], PASSWORD), 300)


async def test_redis_unreachable_fails_closed(make_client: ClientFactory) -> None:
    async with make_client(redis_url="redis://127.0.0.1:1/0") as client:
        user = await register(client)
        response = await client.post(
            "/login", json={"username": user["username"], "password": PASSWORD}
        )
        assert response.status_code == 503
        assert response.json()["error"] == "service_unavailable"


async def test_spoofed_forwarded_for_does_not_escape_the_throttle(
    make_client: ClientFactory,
) -> None:
    # No trusted proxy: X-Forwarded-For is the client's own claim and is ignored.
    async with make_client(login_max_attempts=3) as client:
        user = await register(client)
        for i in range(3):
            await attempt(client, user["username"], address=f"10.0.0.{i}")
        assert_throttled(await attempt(client, user["username"], PASSWORD, address="10.9.9.9"), 300)


async def test_client_chosen_hops_before_the_proxy_do_not_escape_the_throttle(
    throttled_client: Callable[..., Any],
) -> None:
    # Behind the trusted proxy only the hop it appended (the rightmost) is believed.
    async with throttled_client(login_max_attempts=3) as client:
        user = await register(client)
        for i in range(3):
            await attempt(client, user["username"], address=f"10.0.0.{i}, 198.51.100.77")
        blocked = await attempt(
            client, user["username"], PASSWORD, address="10.9.9.9, 198.51.100.77"
        )
        assert_throttled(blocked, 300)
