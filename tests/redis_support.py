"""The local Redis the Redis-backed throttle tests use (README, *Two commands*)."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import IN_CI

REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis() -> None:
    """Skip when Redis does not answer PING, except in CI, where that is a failure."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answered = sock.recv(16).startswith(b"+PONG")
    except OSError:
        answered = False
    if not answered:
        if IN_CI:
            pytest.fail("CI=true but Redis at 127.0.0.1:6379 does not answer")
        pytest.skip("Redis at 127.0.0.1:6379 does not answer")
