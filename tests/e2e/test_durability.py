"""Durability through a real server (README, "Durability"): an answered change has its audit
event even when the process is killed right after answering, and on SQLite several workers
queue their writes instead of refusing them."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import AuditEvent
from tests.conftest import ONLY_SQLITE, PASSWORD, unique_username
from tests.e2e.conftest import ServerFactory

pytestmark = pytest.mark.slow

# Registrations and logins all come from 127.0.0.1: let the abuse limits stay out of it.
OPEN_LIMITS = {
    "AUTHSVC_REGISTER_MAX_PER_ADDRESS": "10000",
    "AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "10000",
}


def _session_id(access_token: str) -> uuid.UUID:
    return uuid.UUID(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def _chain(
    url: str, rotations: int, latencies: list[float] | None = None
) -> tuple[uuid.UUID | None, Counter[int], int]:
    """Register and log in one user, then rotate its refresh token ``rotations`` times, one
    request after the other on a connection of its own (never idle long enough for the
    server's keep-alive timeout to close it under the client).

    Returns the session, the status of every answer, and how many rotations answered 200.
    """
    async with httpx.AsyncClient(timeout=60) as http:
        return await _chain_on(http, url, rotations, latencies)


async def _chain_on(
    http: httpx.AsyncClient, url: str, rotations: int, latencies: list[float] | None
) -> tuple[uuid.UUID | None, Counter[int], int]:
    statuses: Counter[int] = Counter()
    body = {"username": unique_username("durable"), "password": PASSWORD}
    register = await http.post(f"{url}/register", json=body)
    statuses[register.status_code] += 1
    login = await http.post(f"{url}/login", json=body)
    statuses[login.status_code] += 1
    if login.status_code != 200:
        return None, statuses, 0
    pair = login.json()
    rotated = 0
    for _ in range(rotations):
        started = time.monotonic()
        response = await http.post(f"{url}/refresh", json={"refresh_token": pair["refresh_token"]})
        if latencies is not None:
            latencies.append(time.monotonic() - started)
        statuses[response.status_code] += 1
        if response.status_code != 200:
            break
        rotated += 1
        pair = response.json()
    return _session_id(pair["access_token"]), statuses, rotated


async def test_every_answered_login_and_rotation_survives_a_sigkill(
    run_server: ServerFactory, server_database_url: str, db_engine: AsyncEngine
) -> None:
    users, rotations = 8, 10
    server = run_server(env={"AUTHSVC_DATABASE_URL": server_database_url, **OPEN_LIMITS})
    chains = await asyncio.gather(*(_chain(server.url, rotations) for _ in range(users)))
    # Killed the moment the last answer arrived: nothing gets to drain or shut down.
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)

    sessions = [sid for sid, _, _ in chains if sid is not None]
    assert len(sessions) == users, [statuses for _, statuses, _ in chains]
    answered_rotations = sum(rotated for _, _, rotated in chains)
    assert answered_rotations == users * rotations
    async with db_engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AuditEvent.event, func.count())
                .where(AuditEvent.session_id.in_(sessions))
                .group_by(AuditEvent.event)
            )
        ).all()
    recorded = dict(rows)
    lost_logins = users - recorded.get("login_succeeded", 0)
    lost_rotations = answered_rotations - recorded.get("refresh_rotated", 0)
    assert (lost_logins, lost_rotations) == (0, 0), recorded


@ONLY_SQLITE
async def test_concurrent_rotation_chains_on_two_sqlite_workers_get_no_503(
    run_server: ServerFactory, server_database_url: str
) -> None:
    chains, rotations = 32, 20
    server = run_server(
        env={"AUTHSVC_DATABASE_URL": server_database_url, **OPEN_LIMITS},
        args=["--workers", "2"],
    )
    latencies: list[float] = []
    results = await asyncio.gather(
        *(_chain(server.url, rotations, latencies) for _ in range(chains))
    )
    statuses: Counter[int] = sum((s for _, s, _ in results), Counter())
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    print(f"statuses {dict(statuses)}; refresh p99 {p99 * 1000:.0f} ms over {len(latencies)}")
    assert statuses[503] == 0, dict(statuses)
    # Every chain registered (201), logged in and rotated all the way (200).
    assert statuses == Counter({201: chains, 200: chains * (1 + rotations)}), dict(statuses)
