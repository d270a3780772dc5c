"""Overload and oversized requests against a real ``authsvc serve``: a flood of password
checks is refused quickly rather than queued, oversized heads and chunked bodies are refused
before the application reads them, and a slow head does not hold its connection for ever."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest

from authsvc.serving import HEAD_TIMEOUT_SECONDS, MAX_HEADER_BYTES
from tests.conftest import PASSWORD, unique_username
from tests.e2e.conftest import ServerFactory
from tests.e2e.processes import FAST_HASH_ENV, Server
from tests.e2e.test_workers_and_instances import sample, scrape

pytestmark = pytest.mark.slow

FLOOD = 40
QUEUE_MAX = 2


async def test_a_flood_of_logins_gets_quick_503s_and_other_requests_keep_answering(
    run_server: ServerFactory, tmp_path: Path
) -> None:
    # One hashing slot, two places in its queue, the real argon2 cost (tens of ms a check).
    server = run_server(
        env={
            "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/flood.db",
            "AUTHSVC_ENV": "test",
            "AUTHSVC_LOG_FORMAT": "json",
            "AUTHSVC_PASSWORD_HASH_CONCURRENCY": "1",
            "AUTHSVC_PASSWORD_HASH_QUEUE_MAX": str(QUEUE_MAX),
            # The throttle is not what this is about.
            "AUTHSVC_LOGIN_MAX_ATTEMPTS": "1000",
            "AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000",
            "AUTHSVC_REGISTER_MAX_PER_ADDRESS": "1000",
        }
    )
    limits = httpx.Limits(max_connections=FLOOD + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        username = unique_username()
        body = {"username": username, "password": PASSWORD}
        assert (await http.post("/register", json=body)).status_code == 201
        checks_before = sample(
            scrape(server.url), "authsvc_password_hash_seconds_count", operation="verify"
        )

        async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await request
            return response, time.perf_counter() - started

        flooding = True
        health: list[tuple[int, float]] = []

        async def probe() -> None:
            while flooding:
                response, seconds = await timed(http.get("/healthz"))
                health.append((response.status_code, seconds))
                await asyncio.sleep(0.02)

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.1)
        logins = await asyncio.gather(
            *(timed(http.post("/login", json=body)) for _ in range(FLOOD))
        )
        flooding = False
        await prober

        statuses = [r.status_code for r, _ in logins]
        refused = [(r, s) for r, s in logins if r.status_code == 503]
        print(
            f"flood of {FLOOD}: {statuses.count(200)} x 200, {len(refused)} x 503;"
            f" slowest 503 seen by the client {max((s for _, s in refused), default=0):.3f} s;"
            f" /healthz x {len(health)}, slowest {max(s for _, s in health):.3f} s"
        )
        assert set(statuses) <= {200, 503}, statuses
        # The slot and the queue's two places were free when the flood began: those logins
        # went through; the rest of the flood was refused rather than queued.
        assert statuses.count(200) >= 1 + QUEUE_MAX
        assert refused
        for response, _ in refused:
            assert response.json()["error"] == "service_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        # Refused at once, not after waiting for a slot: the server's own time for each
        # (its access log), which leaves out the client's 40 connections queueing here.
        served = {
            line["request_id"]: line["duration_ms"]
            for line in map(json.loads, server.output().splitlines())
            if line.get("message") == "request" and line.get("path") == "/login"
        }
        refused_ms = [served[r.headers["X-Request-ID"]] for r, _ in refused]
        print(f"server time of a 503: max {max(refused_ms)} ms")
        assert max(refused_ms) < 1000
        # Only the logins that got in were checked: a refused one costs no argon2.
        checks = sample(
            scrape(server.url), "authsvc_password_hash_seconds_count", operation="verify"
        )
        assert checks - checks_before == statuses.count(200)
        # The flood never held up anything else.
        assert len(health) >= 3
        assert all(code == 200 and seconds < 1.0 for code, seconds in health), health

        # Registration is refused the same way, and logins that fit succeed again.
        signups = await asyncio.gather(
            *(
                http.post("/register", json={"username": unique_username(), "password": PASSWORD})
                for _ in range(FLOOD)
            )
        )
        codes = [r.status_code for r in signups]
        print(f"registration flood of {FLOOD}: {codes.count(201)} x 201, {codes.count(503)} x 503")
        assert set(codes) <= {201, 503}, codes
        assert codes.count(201) >= 1 + QUEUE_MAX
        assert all(
            r.json()["error"] == "service_unavailable" and "Retry-After" in r.headers
            for r in signups
            if r.status_code == 503
        )
        assert (await http.post("/login", json=body)).status_code == 200


@pytest.fixture
def plain_server(run_server: ServerFactory, tmp_path: Path) -> Iterator[Server]:
    yield run_server(
        env={**FAST_HASH_ENV, "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/h.db"}
    )


def exchange(port: int, data: bytes, timeout: float = 30) -> bytes | None:
    """Send raw bytes, read until the server closes; ``None`` when it reset the connection
    (it refused and closed while data was still on its way)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            return None
        return received


def head(headers: list[bytes]) -> bytes:
    return (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
    )


def refused_for_size(answer: bytes | None) -> bool:
    # 431 before anything was served, or a closed connection.
    return answer is None or answer.startswith(b"HTTP/1.1 431 ") or answer == b""


def test_request_headers_over_16_kib_are_refused_before_the_app(plain_server: Server) -> None:
    port = plain_server.port
    kib = b"a" * 1000
    fits = exchange(port, head([b"X-H%d: %s" % (i, kib) for i in range(15)]))
    assert fits is not None and fits.startswith(b"HTTP/1.1 200 ")
    many = exchange(port, head([b"X-H%d: %s" % (i, kib) for i in range(17)]))
    assert many is not None and many.startswith(b"HTTP/1.1 431 "), many
    assert b'"error": "headers_too_large"' in many
    assert b"connection: close" in many
    for size in (MAX_HEADER_BYTES + 100, 256 * 1024, 4 * 1024 * 1024):
        assert refused_for_size(exchange(port, head([b"X-Big: " + b"a" * size]))), size
    # The application never saw them: nothing was logged for them, and the server serves on.
    assert httpx.get(f"{plain_server.url}/healthz").status_code == 200
    # The request log line is written once the answer has gone out: wait for it.
    deadline = time.monotonic() + 10
    while plain_server.output().count('"path": "/healthz"') < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plain_server.output().count('"path": "/healthz"') == 2


def test_a_head_that_never_completes_is_closed(plain_server: Server) -> None:
    # A slow client (one header byte now and then, or nothing at all) does not keep its
    # connection: it is closed once the head has taken HEAD_TIMEOUT_SECONDS.
    for partial in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a", b""):
        with socket.create_connection(("127.0.0.1", plain_server.port)) as sock:
            sock.settimeout(HEAD_TIMEOUT_SECONDS * 3)
            sock.sendall(partial)
            assert sock.recv(1024) == b""  # closed by the server, before our timeout
    assert httpx.get(f"{plain_server.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "application/json", "multipart/form-data; boundary=x"],
)
def test_chunked_bodies_over_64_kib_get_413(plain_server: Server, content_type: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(70):
            yield (
                b"username=" + b"a" * 1015
                if content_type.startswith("application/x")
                else (b" " * 1024)
            )

    with httpx.Client(base_url=plain_server.url, timeout=30) as http:
        response = http.post("/login", content=chunks(), headers={"Content-Type": content_type})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
