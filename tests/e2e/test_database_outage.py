"""A dead or hung PostgreSQL under live traffic: 503 + Retry-After within 5 s, never a
hang or a 500, recovery without a restart, and no half-rotated session afterwards.

The test runs its own PostgreSQL cluster (initdb + pg_ctl in a temporary directory) so that
it can stop and freeze it, and the real `authsvc serve` on top.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import IN_CI, PASSWORD, bearer
from tests.e2e.processes import (
    PgCluster,
    postgres_bindir,
    private_postgres,
    server_env,
    start_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_postgres_binaries() -> None:
    if postgres_bindir() is None:
        message = "no PostgreSQL server binaries (initdb, pg_ctl) to run a private cluster"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


CONTRACT_SECONDS = 5.0
CLIENTS = 6
RETRY_CODES = {"refresh_token_reused", "refresh_token_revoked"}


@dataclass
class Call:
    kind: str
    started: float
    finished: float
    status: int  # 0: no HTTP response at all (connection error or client timeout)
    error: str | None
    retry_after: str | None

    @property
    def elapsed(self) -> float:
        return self.finished - self.started


@dataclass
class Traffic:
    """Clients that log in and refresh in a loop and record every answer."""

    http: httpx.AsyncClient
    calls: list[Call] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    unexpected: list[str] = field(default_factory=list)

    async def call(self, kind: str, path: str, **kwargs: Any) -> tuple[Call, dict[str, Any]]:
        started = time.monotonic()
        try:
            response = await self.http.request(
                "GET" if kind in ("readyz", "me") else "POST", path, **kwargs
            )
        except httpx.HTTPError as exc:
            call = Call(kind, started, time.monotonic(), 0, type(exc).__name__, None)
            self.calls.append(call)
            return call, {}
        body = response.json() if response.content else {}
        error = body.get("error") if isinstance(body, dict) else None
        call = Call(
            kind,
            started,
            time.monotonic(),
            response.status_code,
            error,
            response.headers.get("retry-after"),
        )
        self.calls.append(call)
        return call, body

    async def client(self, username: str) -> None:
        token: str | None = None
        access: str | None = None
        failed_since_success = False
        turn = 0
        while not self.stopping.is_set():
            turn += 1
            if token is None or turn % 7 == 0:
                call, body = await self.call(
                    "login", "/login", json={"username": username, "password": PASSWORD}
                )
                if call.status == 200:
                    token, access = body["refresh_token"], body["access_token"]
            elif turn % 3 == 0 and access is not None:
                # A bearer endpoint that needs the database (the live session and user).
                call, body = await self.call("me", "/me", headers=bearer(access))
                if call.status == 401:
                    self.unexpected.append(f"/me gave 401 {call.error}")
            else:
                call, body = await self.call("refresh", "/refresh", json={"refresh_token": token})
                if call.status == 200:
                    token, access = body["refresh_token"], body["access_token"]
                elif call.status == 403 and call.error in RETRY_CODES:
                    # Only legitimate after a failed attempt whose rotation committed while
                    # its response was lost (the client then replays the old token).
                    if not failed_since_success:
                        self.unexpected.append(f"{call.error} without a preceding failure")
                    token = None
            if call.status == 200:
                failed_since_success = False
            elif call.status == 503:
                failed_since_success = True
            await asyncio.sleep(0.05)

    async def readiness(self) -> None:
        while not self.stopping.is_set():
            await self.call("readyz", "/readyz")
            await asyncio.sleep(0.25)

    def between(
        self, start: float, end: float, kinds: tuple[str, ...] = ("login", "refresh", "me")
    ) -> list[Call]:
        return [c for c in self.calls if c.kind in kinds and start <= c.started < end]

    def first_answer_after(self, moment: float, status: int) -> float | None:
        """Seconds from ``moment`` to the first ``status`` answer to a request sent after it."""
        times = [
            c.finished - moment
            for c in self.calls
            if c.kind in ("login", "refresh", "me") and c.started >= moment and c.status == status
        ]
        return min(times) if times else None

    async def wait_for_success_after(self, moment: float, limit: float) -> float | None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = self.first_answer_after(moment, 200)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        return None


def check_outage_answers(calls: list[Call], phase: str) -> None:
    assert calls, f"{phase}: no traffic"
    for call in calls:
        assert call.status != 0, f"{phase}: no response ({call.error}) after {call.elapsed:.2f}s"
        assert call.status != 500, f"{phase}: a 500"
        if call.status == 503:
            assert call.error == "service_unavailable", f"{phase}: {call.error}"
            assert call.retry_after is not None and int(call.retry_after) > 0
        assert call.elapsed < CONTRACT_SECONDS, (
            f"{phase}: {call.kind} answered {call.status} after {call.elapsed:.2f}s"
        )


async def half_rotated_tokens(cluster: PgCluster) -> int:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres")
    try:
        # Every consumed token must have its successor: a rotation commits both or neither.
        count: int = await conn.fetchval(
            """
            SELECT count(*) FROM refresh_tokens t
            WHERE t.consumed_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM refresh_tokens c WHERE c.parent_id = t.id)
            """
        )
        consumed: int = await conn.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE consumed_at IS NOT NULL"
        )
        assert consumed > 0, "no rotation reached the database"
        return count
    finally:
        await conn.close()


async def test_dead_and_hung_database_give_fast_503s_and_recover(tmp_path: Path) -> None:
    with private_postgres() as cluster:
        env = server_env(
            cluster.url,
            tmp_path / "data",
            # A small pool, so that waiting for a connection (pool timeout) is exercised too.
            {"AUTHSVC_DB_POOL_SIZE": "3", "AUTHSVC_DB_MAX_OVERFLOW": "1"},
        )
        server = await asyncio.to_thread(start_server, tmp_path / "srv", env=env)
        try:
            await _outage_scenario(server.url, cluster)
        except BaseException:
            # What went wrong: the errors and tracebacks (a 500's), not the info and warnings.
            output = server.output().splitlines()
            print("\n".join(x for x in output if '"level": "info"' not in x and "warning" not in x))
            print(cluster.log()[-3000:])
            raise
        finally:
            await asyncio.to_thread(server.stop)
        assert await half_rotated_tokens(cluster) == 0
        # Outages are logged as such, and never with a traceback of a 500.
        lines = server.output().splitlines()
        kinds = Counter(
            json.loads(line).get("error")
            for line in lines
            if '"database unavailable"' in line or '"database not ready"' in line
        )
        print("errors mapped to 503:", dict(kinds))
        assert kinds
        assert not any("Exception in ASGI application" in line for line in lines)


async def _outage_scenario(url: str, cluster: PgCluster) -> None:
    figures: dict[str, float | None] = {}
    # A new connection per request: a kept-alive one that the server times out just as the
    # client reuses it fails on the client's side (a race of HTTP keep-alive, not ours).
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=no_keepalive) as http:
        users = [f"outage{i}" for i in range(CLIENTS)]
        for username in users:
            r = await http.post("/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
        traffic = Traffic(http)
        tasks = [asyncio.create_task(traffic.client(u)) for u in users]
        tasks.append(asyncio.create_task(traffic.readiness()))
        try:
            await asyncio.sleep(1.5)

            # 1. The database goes away (fast shutdown: backends are terminated).
            stopped = time.monotonic()
            await asyncio.to_thread(cluster.stop, "fast")
            await asyncio.sleep(6)
            restarted_at = time.monotonic()
            await asyncio.to_thread(cluster.start)
            started = time.monotonic()
            figures["dead_time_to_503"] = traffic.first_answer_after(stopped, 503)
            figures["dead_time_to_recover"] = await traffic.wait_for_success_after(started, 20)
            check_outage_answers(traffic.between(stopped, restarted_at), "database stopped")
            figures["dead_slowest_answer"] = max(
                c.elapsed for c in traffic.between(stopped, restarted_at)
            )
            await asyncio.sleep(1.5)

            # 2. The database hangs: every PostgreSQL process stopped with SIGSTOP.
            frozen = time.monotonic()
            pids = cluster.freeze()
            await asyncio.sleep(7)
            thawed = time.monotonic()
            cluster.thaw(pids)
            figures["hung_time_to_503"] = traffic.first_answer_after(frozen, 503)
            figures["hung_time_to_recover"] = await traffic.wait_for_success_after(thawed, 20)
            # Requests sent while it hung; the last second's may be answered after the thaw.
            check_outage_answers(traffic.between(frozen, thawed), "database hung")
            figures["hung_slowest_answer"] = max(c.elapsed for c in traffic.between(frozen, thawed))
            await asyncio.sleep(2)
        finally:
            traffic.stopping.set()
            await asyncio.gather(*tasks)

    print("outage figures (seconds):", json.dumps(figures))
    for phase, window in (("stopped", (stopped, restarted_at)), ("hung", (frozen, thawed))):
        ready = traffic.between(*window, kinds=("readyz",))
        # Probes sent in the outage's first second may still have found it up, and one
        # in flight at its end may find it back.
        late = [c for c in ready if c.started > window[0] + 1 and c.finished < window[1]]
        assert late and all(c.status == 503 for c in late), phase
        assert all(c.elapsed < CONTRACT_SECONDS for c in ready), phase
    assert (
        figures["dead_time_to_503"] is not None and figures["dead_time_to_503"] < CONTRACT_SECONDS
    )
    assert (
        figures["hung_time_to_503"] is not None and figures["hung_time_to_503"] < CONTRACT_SECONDS
    )
    assert figures["dead_time_to_recover"] is not None, "no recovery after the restart"
    assert figures["hung_time_to_recover"] is not None, "no recovery after the thaw"
    assert not traffic.unexpected, traffic.unexpected
    assert not [c for c in traffic.calls if c.status in (0, 500)]
    # Healthy again: the last second of traffic is all 200.
    tail = [
        c for c in traffic.calls if c.kind != "readyz" and c.started > traffic.calls[-1].started - 1
    ]
    assert tail and all(c.status == 200 for c in tail), [(c.status, c.error) for c in tail]
    allowed = {200, 503} | {403}
    assert {c.status for c in traffic.calls} <= allowed


async def test_a_full_database_gives_503(make_client: Any) -> None:
    # The server's connection slots are all taken: "sorry, too many clients already".
    options = "-c max_connections=3 -c superuser_reserved_connections=0"
    with private_postgres(options) as cluster:
        dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        holders = [await asyncpg.connect(dsn) for _ in range(3)]
        try:
            with pytest.raises(asyncpg.TooManyConnectionsError):
                await asyncpg.connect(dsn)
            async with make_client(database_url=cluster.url) as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                response = await client.post(
                    "/login", json={"username": "someone", "password": PASSWORD}
                )
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "service_unavailable"
                assert "Retry-After" in response.headers
        finally:
            for holder in holders:
                await holder.close()
