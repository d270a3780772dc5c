"""The local Redis the Redis-backed throttle tests use (README, *Two commands*).

Tests that need it are parametrized with ``store="redis"``; tests/conftest.py leaves them
out, with one line saying why, when Redis does not answer (under ``CI=true`` they run, and
fail). Each test takes its keys under its own prefix from the ``redis_key_prefix`` fixture
(tests/conftest.py), which deletes them afterwards, so a shared Redis is left as it was found.
"""

from __future__ import annotations

import socket

import coredis
import pytest

from tests.conftest import IN_CI

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_ADDRESS = ("127.0.0.1", 6379)


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS_ADDRESS, timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def require_redis() -> None:
    """Fail in CI when Redis does not answer (elsewhere tests/conftest.py left the test out)."""
    if not redis_answers():
        if IN_CI:
            pytest.fail("CI=true but Redis at 127.0.0.1:6379 does not answer")
        pytest.skip("Redis at 127.0.0.1:6379 does not answer")


async def delete_keys(prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many there were."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(keys)
    return len(keys)
