"""`authsvc serve --workers N` and several `serve` processes behave as one service."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authsvc.security import argon2_memory
from authsvc.security.passwords import SLOTS_DIR_ENV
from tests.conftest import PASSWORD, unique_username
from tests.e2e.processes import Server, server_env, start_server

pytestmark = pytest.mark.slow


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    # A new connection per scrape, so that successive scrapes can land on different workers.
    response = httpx.get(f"{base_url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def worker_pids(server: Server) -> set[int]:
    return {int(m) for m in re.findall(r"Started server process \[(\d+)\]", server.output())}


def json_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for line in server.output().splitlines():
        lines.append(json.loads(line))  # every line the service writes is one JSON object
    return lines


async def login_many(
    base_url: str, username: str, count: int, password: str = PASSWORD
) -> list[int]:
    # Each login on its own connection, many at once: the kernel spreads them over workers.
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        responses = await asyncio.gather(
            *(
                http.post("/login", json={"username": username, "password": password})
                for _ in range(count)
            )
        )
    return [r.status_code for r in responses]


async def test_metrics_add_up_over_workers(
    database_url: str, clean_db: object, tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    # The loop below fails logins on purpose, as often as it takes: not the throttle's business.
    no_throttle = {"AUTHSVC_LOGIN_MAX_ATTEMPTS": "1000", "TMPDIR": str(tmpdir)}
    env = server_env(database_url, tmp_path / "data", no_throttle)
    server = await asyncio.to_thread(
        start_server, tmp_path / "srv", env=env, args=["--workers", "2"]
    )
    try:
        # serve made a fresh multiprocess directory for the workers.
        assert len(list(tmpdir.glob("authsvc-metrics-*"))) == 1
        username = unique_username()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            r = await http.post("/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
        ok = failed = 0
        for _ in range(10):  # until both workers have served logins
            statuses = await login_many(server.url, username, 12)
            assert set(statuses) == {200}, statuses
            ok += len(statuses)
            statuses = await login_many(server.url, username, 2, password="wrong password!!")
            assert set(statuses) == {401}, statuses
            failed += len(statuses)
            served = {
                line["pid"]
                for line in json_lines(server)
                if line.get("message") == "request" and line.get("path") == "/login"
            }
            if len(served) >= 2:
                break
        assert len(served) == 2, "every login went to one worker"

        # Whichever worker answers the scrape, it reports the service's totals.
        for _ in range(6):
            samples = scrape(server.url)
            assert sample(samples, "authsvc_logins_total", outcome="success") == ok
            assert sample(samples, "authsvc_logins_total", outcome="invalid_credentials") == failed
            assert (
                sample(
                    samples, "http_requests_total", handler="/login", method="POST", status="200"
                )
                == ok
            )
            assert sample(samples, "authsvc_password_hash_seconds_count", operation="verify") >= (
                ok + failed
            )
            assert sample(samples, "authsvc_workers") == 2

        # A worker killed outright: uvicorn starts another; its counts stay in the totals
        # and the dead one no longer counts as serving.
        pids = worker_pids(server)
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(150):  # until the replacement has started (and set its gauge)
            if server.output().count("Application startup complete") >= 3:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"uvicorn did not replace the worker:\n{server.output()[-2000:]}")
        for _ in range(4):
            samples = scrape(server.url)
            assert sample(samples, "authsvc_logins_total", outcome="success") == ok
            assert sample(samples, "authsvc_workers") == 2
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0
    # The multiprocess directory is gone with the server.
    assert list(tmpdir.glob("authsvc-metrics-*")) == []
    # Logs: JSON only, one line per request of ours and none of uvicorn's access log.
    lines = json_lines(server)
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    requests = [line for line in lines if line["logger"] == "authsvc.access"]
    assert sum(1 for line in requests if line["path"] == "/login") == ok + failed
    for line in requests:
        assert {"method", "path", "status", "duration_ms", "request_id", "client"} <= line.keys()
    assert PASSWORD not in server.output()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_inflight_logins_finish(
    database_url: str, clean_db: object, tmp_path: Path, workers: int
) -> None:
    # Real argon2id memory cost, and enough passes that a login takes a good fraction of a
    # second: the logins are certainly still hashing when SIGTERM arrives.
    env = server_env(
        database_url,
        tmp_path / "data",
        {
            "AUTHSVC_ARGON2_MEMORY_COST": "19456",
            "AUTHSVC_ARGON2_TIME_COST": "16",
            "AUTHSVC_PASSWORD_HASH_CONCURRENCY": "1",
        },
    )
    server = await asyncio.to_thread(
        start_server, tmp_path / "srv", env=env, args=["--workers", str(workers)]
    )
    slots: Path | None = None
    try:
        username = unique_username()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            r = await http.post("/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
            started = time.monotonic()
            r = await http.post("/login", json={"username": username, "password": PASSWORD})
            assert r.status_code == 200
            one_login = time.monotonic() - started
        slots = await asyncio.to_thread(hashing_slots_dir, server.process.pid)
        if workers > 1 and argon2_memory.on_tmpfs(SHM):
            # The workers share the slots, and on tmpfs each slot's argon2 memory: the hashes
            # so far ran in it (security.argon2_memory).
            assert slots is not None and slots.parent == SHM
            used = await asyncio.to_thread(lambda: sorted(slots.glob("argon2-memory-*")))
            assert used and all(p.stat().st_size >= 19456 * 1024 for p in used)
        elif workers == 1:
            assert slots is None

        async with httpx.AsyncClient(
            base_url=server.url, timeout=120, limits=httpx.Limits(max_keepalive_connections=0)
        ) as http:
            logins = [
                asyncio.create_task(
                    http.post("/login", json={"username": username, "password": PASSWORD})
                )
                for _ in range(5)
            ]
            await asyncio.sleep(min(0.5, one_login / 2))
            in_flight = sum(1 for task in logins if not task.done())
            server.process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*logins)
        assert in_flight >= 3, f"only {in_flight} logins were in flight ({one_login:.2f}s each)"
        for response in responses:
            assert response.status_code == 200, response.text
            assert response.json()["refresh_token"]
        code = await asyncio.to_thread(server.process.wait, 60)
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert code in (0, -signal.SIGTERM), code
        # And it stopped taking new connections.
        async with httpx.AsyncClient(timeout=2) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"{server.url}/healthz")
    finally:
        await asyncio.to_thread(server.stop)
    assert "Application shutdown complete" in server.output()
    if slots is not None:
        assert not await asyncio.to_thread(slots.exists), "the slots outlived the server"


SHM = Path("/dev/shm")  # noqa: S108 - only looked at


def hashing_slots_dir(parent: int) -> Path | None:
    """The hashing slots' directory that ``serve``'s workers (children of ``parent``) got."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != parent:
            continue
        for item in environ:
            if item.startswith(SLOTS_DIR_ENV.encode() + b"="):
                return Path(item.split(b"=", 1)[1].decode())
    return None


# Races of one token over several instances: the table in tests/e2e/test_concurrency.py.


async def test_connections_that_arrive_together_spread_over_the_workers(
    database_url: str, clean_db: object, tmp_path: Path
) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT, authsvc.workers): 16
    clients that connect at once reach both workers. On one shared socket, the worker that
    woke first used to accept them all."""
    env = server_env(database_url, tmp_path / "data")
    server = await asyncio.to_thread(
        start_server, tmp_path / "srv", env=env, args=["--workers", "2"]
    )
    try:
        assert "listens on its own socket (SO_REUSEPORT)" in server.output()
        for _ in range(300):  # both workers listening, not only the first to answer
            if server.output().count("Application startup complete") == 2:
                break
            await asyncio.sleep(0.1)
        clients = [httpx.AsyncClient(base_url=server.url, timeout=30) for _ in range(16)]
        try:
            statuses = await asyncio.gather(*(c.get("/healthz") for c in clients))
            assert {r.status_code for r in statuses} == {200}
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        await asyncio.sleep(0.2)  # the access lines are written after each answer
        answered_by = {
            line["pid"]
            for line in json_lines(server)
            if line.get("message") == "request" and line.get("path") == "/healthz"
        }
        assert answered_by == worker_pids(server), answered_by
    finally:
        server.stop()
