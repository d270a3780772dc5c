"""An unknown user and a wrong password are indistinguishable: status, body, headers, time."""

from __future__ import annotations

import statistics
import time

import pytest
from httpx import AsyncClient, Response

from tests.conftest import PASSWORD, ClientFactory, register, unique_username

# OWASP's minimum argon2id parameters, the service's defaults (the suite's FAST_HASH is
# far cheaper and would hide a missing dummy verification behind database noise).
REAL_ARGON2 = {"argon2_memory_cost": 19456, "argon2_time_cost": 2, "argon2_parallelism": 1}
# The throttle would answer 429 long before the timing samples are in.
NO_THROTTLE = {"login_max_attempts": 10_000, "login_max_attempts_per_address": 10_000}


def comparable(response: Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    # Date and X-Request-ID differ between any two responses, by design.
    headers = sorted(
        (k.lower(), v)
        for k, v in response.headers.items()
        if k.lower() not in ("date", "x-request-id")
    )
    return response.status_code, response.content, headers


async def test_unknown_user_and_wrong_password_answer_identically(client: AsyncClient) -> None:
    user = await register(client)
    wrong = await client.post(
        "/login", json={"username": user["username"], "password": "not it at all"}
    )
    unknown = await client.post(
        "/login", json={"username": unique_username(), "password": PASSWORD}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"
    assert comparable(wrong) == comparable(unknown)
    # The same with the OAuth2 password form.
    form_wrong = await client.post(
        "/login",
        data={"username": user["username"], "password": "not it at all", "grant_type": "password"},
    )
    form_unknown = await client.post(
        "/login",
        data={"username": unique_username(), "password": PASSWORD, "grant_type": "password"},
    )
    assert comparable(form_wrong) == comparable(form_unknown) == comparable(wrong)


async def test_throttled_known_and_unknown_users_answer_identically(
    make_client: ClientFactory,
) -> None:
    async with make_client(login_max_attempts=2) as client:
        user = await register(client)
        ghost = unique_username("ghost")
        for name in (user["username"], ghost) * 2:
            await client.post("/login", json={"username": name, "password": "not it at all"})
        known = await client.post(
            "/login", json={"username": user["username"], "password": PASSWORD}
        )
        unknown = await client.post("/login", json={"username": ghost, "password": PASSWORD})
        assert known.status_code == unknown.status_code == 429
        assert known.json() == unknown.json()
        assert {k for k in known.headers} == {k for k in unknown.headers}


@pytest.mark.slow
async def test_unknown_user_costs_the_same_time_as_a_wrong_password(
    make_client: ClientFactory,
) -> None:
    """Medians of many interleaved samples with the real argon2 cost.

    A missing dummy verification makes the unknown user ~40 ms (one argon2 verify) faster
    than a wrong password, a ratio far outside the bound; the bound is generous because
    the machine is shared and medians still wobble under load.
    """
    async with make_client(**REAL_ARGON2, **NO_THROTTLE) as client:
        users = [(await register(client))["username"] for _ in range(4)]
        wrong_times: list[float] = []
        unknown_times: list[float] = []
        for i in range(60):
            for kind in ("wrong", "unknown") if i % 2 else ("unknown", "wrong"):
                name = users[i % len(users)] if kind == "wrong" else unique_username("ghost")
                started = time.perf_counter()
                response = await client.post(
                    "/login", json={"username": name, "password": "not it at all"}
                )
                elapsed = time.perf_counter() - started
                assert response.status_code == 401
                (wrong_times if kind == "wrong" else unknown_times).append(elapsed)
        wrong_median = statistics.median(wrong_times)
        unknown_median = statistics.median(unknown_times)
        ratio = unknown_median / wrong_median
        print(
            f"median wrong password {wrong_median * 1000:.1f} ms, "
            f"unknown user {unknown_median * 1000:.1f} ms, ratio {ratio:.2f}"
        )
        assert 0.6 <= ratio <= 1.6, (wrong_median, unknown_median)
