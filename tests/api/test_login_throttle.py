"""The login throttle through the HTTP interface, on both databases and on Redis.

Client addresses other than the test client's own come from ``X-Forwarded-For``, believed
because the test client's address is configured as a trusted proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import KnownAddress
from authsvc.security.passwords import PasswordHasher
from tests.conftest import PASSWORD, ClientFactory, FakeClock, register, unique_username
from tests.redis_support import REDIS_URL, require_redis

PROXY = "203.0.113.7"


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "redis":
        require_redis()
    return name


@pytest.fixture
def throttled_client(
    make_client: ClientFactory, store: str, request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """``make_client`` with the throttle in ``store``; Redis keys get a per-test prefix."""
    prefix = request.getfixturevalue("redis_key_prefix") if store == "redis" else None

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[AsyncClient]:
        if store == "redis":
            overrides = {"redis_url": REDIS_URL, "redis_key_prefix": prefix, **overrides}
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


async def test_throttle_lifts_when_the_window_passes(
    throttled_client: Callable[..., Any], store: str
) -> None:
    clock = FakeClock()
    async with throttled_client(
        login_max_attempts=2, login_window_seconds=1, clock=clock
    ) as client:
        user = await register(client)
        for _ in range(2):
            await attempt(client, user["username"])
        assert_throttled(await attempt(client, user["username"], PASSWORD), 1)
        clock.advance(1.5)
        if store == "redis":
            await asyncio.sleep(1.5)  # Redis keeps its windows on its own clock (TIME)
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
        # Counted before checked: never more checks than the limit, and the refused
        # attempts were not counted, so the window holds the rest of the limit.
        checked = statuses.count(401)
        assert checked <= 5
        for _ in range(5 - checked):
            assert (await attempt(client, user["username"])).status_code == 401
        assert_throttled(await attempt(client, user["username"], PASSWORD), 300)


async def test_redis_unreachable_fails_closed(make_client: ClientFactory) -> None:
    async with make_client() as client:
        user = await register(client)
    async with make_client(redis_url="redis://127.0.0.1:1/0") as client:
        body = {"username": user["username"], "password": PASSWORD}
        for path, json in [("/login", body), ("/register", {**body, "username": "newcomer"})]:
            response = await client.post(path, json=json)
            assert response.status_code == 503, path
            assert response.json()["error"] == "service_unavailable"
            assert response.headers["Retry-After"] == "5"


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


async def test_account_cap_spares_an_address_the_owner_logged_in_from(
    throttled_client: Callable[..., Any], clean_db: AsyncEngine
) -> None:
    # Someone else's failures must not lock the owner out of where it logged in before.
    async with throttled_client(login_account_max_failures=3) as client:
        user = await register(client)
        name = user["username"]
        home, office = "192.0.2.10", "2001:db8:aa:bb::1"
        for address in (home, office):
            assert (await attempt(client, name, PASSWORD, address=address)).status_code == 200
        for i in range(3):
            assert (await attempt(client, name, address=f"198.51.100.{i}")).status_code == 401
        assert_throttled(await attempt(client, name, PASSWORD, address="192.0.2.11"), 86400)
        # From a known address the right password still works: the address itself, and
        # another address of the same IPv6 /64.
        assert (await attempt(client, name, PASSWORD, address=home)).status_code == 200
        for i in range(3):
            assert (await attempt(client, name, address=f"198.51.100.{10 + i}")).status_code == 401
        ok = await attempt(client, name, PASSWORD, address="2001:db8:aa:bb:ffff::9")
        assert ok.status_code == 200, ok.text

    async with clean_db.connect() as conn:
        stored = (await conn.execute(select(KnownAddress.address_digest))).scalars().all()
    # Keyed hashes only, one per address (the /64 once), none of them the address.
    assert len(stored) == 2
    assert all(len(digest) == 64 and ":" not in digest and "." not in digest for digest in stored)


async def test_a_known_address_is_forgotten_after_the_configured_days(
    throttled_client: Callable[..., Any], clean_db: AsyncEngine
) -> None:
    async with throttled_client(
        login_account_max_failures=2, login_known_address_days=30
    ) as client:
        user = await register(client)
        name = user["username"]
        assert (await attempt(client, name, PASSWORD, address="192.0.2.30")).status_code == 200
        async with clean_db.begin() as conn:
            await conn.execute(
                update(KnownAddress).values(
                    last_login_at=datetime.now(UTC) - timedelta(days=30, minutes=1)
                )
            )
        for i in range(2):
            await attempt(client, name, address=f"198.51.100.{i}")
        assert_throttled(await attempt(client, name, PASSWORD, address="192.0.2.30"), 86400)


async def test_known_addresses_can_be_turned_off(throttled_client: Callable[..., Any]) -> None:
    async with throttled_client(login_account_max_failures=2, login_known_address_days=0) as client:
        user = await register(client)
        name = user["username"]
        assert (await attempt(client, name, PASSWORD, address="192.0.2.40")).status_code == 200
        for i in range(2):
            await attempt(client, name, address=f"198.51.100.{i}")
        assert_throttled(await attempt(client, name, PASSWORD, address="192.0.2.40"), 86400)


async def test_ipv6_addresses_count_by_their_64_prefix(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client(login_max_attempts=3, login_max_attempts_per_address=5) as client:
        user = await register(client)
        name = user["username"]
        # One username: three guesses from three addresses of one /64 fill the pair window.
        for i in range(3):
            assert (
                await attempt(client, name, address=f"2001:db8:1:2::{i + 1}")
            ).status_code == 401
        assert_throttled(await attempt(client, name, PASSWORD, address="2001:db8:1:2:ffff::1"), 300)
        ok = await attempt(client, name, PASSWORD, address="2001:db8:1:3::1")  # another /64
        assert ok.status_code == 200, ok.text
        # Many usernames from one /64 fill the per-address window.
        for i in range(5):
            ghost = unique_username("ghost")
            response = await attempt(client, ghost, address=f"2001:db8:9:9:{i}::1")
            assert response.status_code == 401
        assert_throttled(
            await attempt(client, unique_username(), address="2001:db8:9:9::abcd"), 300
        )


async def test_registration_is_limited_per_address_whatever_the_outcome(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client(register_max_per_address=3, register_window_seconds=600) as client:
        taken = unique_username()

        async def sign_up(username: str, password: str, address: str) -> Response:
            return await client.post(
                "/register",
                json={"username": username, "password": password},
                headers={"X-Forwarded-For": address},
            )

        assert (await sign_up(taken, PASSWORD, "198.51.100.50")).status_code == 201
        # A 409 (probing for usernames) and a 422 count too.
        assert (await sign_up(taken, PASSWORD, "198.51.100.50")).status_code == 409
        assert (await sign_up(unique_username(), "password", "198.51.100.50")).status_code == 422
        refused = await sign_up(unique_username(), PASSWORD, "198.51.100.50")
        assert_throttled(refused, 600)
        assert "registration" in refused.json()["detail"]
        # Other addresses are not affected; an IPv6 /64 is one address.
        assert (await sign_up(unique_username(), PASSWORD, "198.51.100.51")).status_code == 201
        for i in range(3):
            await sign_up(unique_username(), PASSWORD, f"2001:db8:5:5::{i + 1}")
        assert_throttled(await sign_up(unique_username(), PASSWORD, "2001:db8:5:5::99"), 600)


async def test_registration_limit_holds_under_a_burst(
    throttled_client: Callable[..., Any],
) -> None:
    async with throttled_client(register_max_per_address=4) as client:
        taken = unique_username()
        responses = await asyncio.gather(
            *(
                client.post(
                    "/register",
                    json={"username": taken, "password": PASSWORD},
                    headers={"X-Forwarded-For": "198.51.100.60"},
                )
                for _ in range(16)
            )
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {201, 409, 429}, statuses
        admitted = statuses.count(201) + statuses.count(409)
        assert admitted <= 4
        assert statuses.count(201) <= 1
        # The refused ones were not counted: the rest of the limit is still there.
        for _ in range(4 - admitted):
            response = await client.post(
                "/register",
                json={"username": unique_username(), "password": PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.60"},
            )
            assert response.status_code == 201
        refused = await client.post(
            "/register",
            json={"username": unique_username(), "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.60"},
        )
        assert_throttled(refused, 3600)


async def test_behind_a_proxy_that_is_not_trusted_one_client_spends_everyones_budget(
    make_client: ClientFactory,
) -> None:
    # What docs/deployment.md warns about: every client has the proxy's address, so one
    # attacker's failures lock out everyone else behind the same proxy.
    async with make_client(login_max_attempts_per_address=4) as client:
        victim = await register(client)
        for i in range(4):
            await attempt(client, unique_username("stuffed"), address=f"198.51.100.{i}")
        assert_throttled(
            await attempt(client, victim["username"], PASSWORD, address="192.0.2.200"), 300
        )
    # With the proxy trusted, the attacker spends only its own.
    async with make_client(login_max_attempts_per_address=4, trusted_proxies=[PROXY]) as client:
        victim = await register(client)
        for _ in range(4):
            await attempt(client, unique_username("stuffed"), address="198.51.100.1")
        ok = await attempt(client, victim["username"], PASSWORD, address="192.0.2.200")
        assert ok.status_code == 200, ok.text
