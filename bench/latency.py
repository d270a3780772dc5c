#!/usr/bin/env python
"""Login and refresh latency of a real ``authsvc serve``, as ratios to floors from the same run.

Not a test: a rerunnable measurement (see ../shared/BENCH.md: only ratios inside one run mean
something on a shared machine). For each backend (SQLite, and PostgreSQL when a URL is given)
it starts ``authsvc serve`` in a scratch directory with the default argon2 parameters, then,
sequentially and with 4 and 32 concurrent clients, measures:

- login   against  argon2: a bare pwdlib argon2id verify with the service's parameters, in
                   this process, at most cpu_count at once (the service's own limit), so
                   queueing is part of the floor as it is part of the service;
- refresh against  sql:  the rotation written by hand, in this process: ``UPDATE ...
                   RETURNING`` + ``INSERT`` + commit in one transaction (asyncpg on PostgreSQL,
                   sqlite3 with ``BEGIN IMMEDIATE`` on SQLite), same concurrency;
                   http: ``GET /.well-known/jwks.json`` on the same server and client (the HTTP
                   round trip with no work behind it);
- jwks@50/s        GETs of the JWKS at a fixed 50/s, timed from their scheduled start, while 32
                   clients log in, against the same idle (BENCH.md's W4: does hashing stall
                   the event loop?).

Usage (from the repository root):
    .venv/bin/python bench/latency.py                      # SQLite only
    .venv/bin/python bench/latency.py --pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/db
    .venv/bin/python bench/latency.py --json out.json --workers 2 --rounds 5

The PostgreSQL database should be a throwaway: the server migrates it, the bench adds users and
a scratch table (``bench_floor_tokens``, dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark user's
CONCURRENCY = (1, 4, 32)
# Requests per client at each concurrency: enough samples for a p95, short enough to rerun.
LOGINS_PER_CLIENT = {1: 30, 4: 10, 32: 3}
REFRESHES_PER_CLIENT = {1: 200, 4: 50, 32: 10}


@dataclass
class Row:
    backend: str
    operation: str
    clients: int
    samples: int
    median_ms: float
    p95_ms: float
    per_second: float
    floor: str
    floor_median_ms: float
    floor_p95_ms: float
    floor_per_second: float

    @property
    def ratio_median(self) -> float:
        return self.median_ms / self.floor_median_ms

    @property
    def ratio_p95(self) -> float:
        return self.p95_ms / self.floor_p95_ms


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


Run = tuple[list[float], float]  # per-call latencies (s), wall time of the whole run (s)


def summary(run: Run) -> tuple[float, float, float]:
    """Median and p95 latency in ms, and calls per second over the run."""
    latencies, wall = run
    return (
        statistics.median(latencies) * 1000,
        percentile(latencies, 0.95) * 1000,
        len(latencies) / wall,
    )


# --- the server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, cwd: Path, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).with_name("authsvc")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "authsvc"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
        self.log = (cwd / "serve.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own console script
            [*command, "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=cwd,
            env={**clean, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"authsvc serve exited: see {cwd / 'serve.log'}")
            try:
                if httpx.get(self.url + "/.well-known/jwks.json").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("authsvc serve did not get ready in 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# --- driving clients --------------------------------------------------------------------


async def timed_clients(
    clients: int, per_client: int, make_op: Callable[[int], Awaitable[Callable[[], Awaitable[Any]]]]
) -> Run:
    """Run ``clients`` concurrent loops of ``per_client`` timed calls; setup is not timed."""
    ops = await asyncio.gather(*(make_op(i) for i in range(clients)))
    start = asyncio.Event()
    latencies: list[float] = []

    async def loop(op: Callable[[], Awaitable[Any]]) -> None:
        await start.wait()
        for _ in range(per_client):
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(loop(op)) for op in ops]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return latencies, time.perf_counter() - t0


def http_client(url: str, clients: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=120)


async def register(http: httpx.AsyncClient) -> str:
    username = f"bench{uuid.uuid4().hex[:12]}"
    response = await http.post("/register", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return username


async def bench_login(url: str, clients: int) -> Run:
    async with http_client(url, clients) as http:
        username = await register(http)
        body = {"username": username, "password": PASSWORD}

        async def make_op(_: int) -> Callable[[], Awaitable[None]]:
            await http.get("/.well-known/jwks.json")  # open this client's connection untimed

            async def op() -> None:
                response = await http.post("/login", json=body)
                assert response.status_code == 200, response.text

            return op

        return await timed_clients(clients, LOGINS_PER_CLIENT[clients], make_op)


async def bench_refresh(url: str, clients: int) -> Run:
    async with http_client(url, clients) as http:
        username = await register(http)
        body = {"username": username, "password": PASSWORD}

        async def make_op(_: int) -> Callable[[], Awaitable[None]]:
            response = await http.post("/login", json=body)
            response.raise_for_status()
            token = [response.json()["refresh_token"]]

            async def op() -> None:
                response = await http.post("/refresh", json={"refresh_token": token[0]})
                assert response.status_code == 200, response.text
                token[0] = response.json()["refresh_token"]

            return op

        return await timed_clients(clients, REFRESHES_PER_CLIENT[clients], make_op)


async def bench_jwks(url: str, clients: int) -> Run:
    async with http_client(url, clients) as http:

        async def make_op(_: int) -> Callable[[], Awaitable[None]]:
            await http.get("/.well-known/jwks.json")  # open this client's connection untimed

            async def op() -> None:
                response = await http.get("/.well-known/jwks.json")
                assert response.status_code == 200

            return op

        return await timed_clients(clients, REFRESHES_PER_CLIENT[clients], make_op)


async def paced_gets(url: str, count: int, rate: float) -> Run:
    """``count`` GETs of the JWKS at a fixed rate, each timed from its *scheduled* start, so a
    stalled server shows up in full (no coordinated omission)."""
    async with http_client(url, 8) as http:
        await http.get("/.well-known/jwks.json")
        t0 = time.perf_counter()
        latencies: list[float] = []

        async def one(scheduled: float) -> None:
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            response = await http.get("/.well-known/jwks.json")
            assert response.status_code == 200
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(t0 + i / rate) for i in range(count)))
        return latencies, time.perf_counter() - t0


async def bench_stall(url: str) -> tuple[Run, Run]:
    """JWKS GETs at 50/s, first idle, then while 32 clients log in (does hashing stall?)."""
    idle = await paced_gets(url, 100, 50.0)
    logins = asyncio.create_task(bench_login(url, 32))
    await asyncio.sleep(0.2)
    during = await paced_gets(url, 100, 50.0)
    await logins
    return during, idle


# --- floors -----------------------------------------------------------------------------


async def floor_argon2(clients: int) -> Run:
    """A bare argon2id verify with the service's default parameters, ``cpu_count`` at once."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    from authsvc.config import Settings

    s = Settings(_env_file=None)
    hasher = PasswordHash(
        (
            Argon2Hasher(
                memory_cost=s.argon2_memory_cost,
                time_cost=s.argon2_time_cost,
                parallelism=s.argon2_parallelism,
            ),
        )
    )
    stored = hasher.hash(PASSWORD)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=min(clients, os.cpu_count() or 2)) as pool:

        async def make_op(_: int) -> Callable[[], Awaitable[bool]]:
            def verify() -> bool:
                return hasher.verify(PASSWORD, stored)

            return lambda: loop.run_in_executor(pool, verify)

        return await timed_clients(clients, LOGINS_PER_CLIENT[clients], make_op)


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(48)
    return token, hashlib.sha256(token.encode()).hexdigest()


async def floor_sql_postgres(url: str, clients: int) -> Run:
    """Rotation by hand over asyncpg: UPDATE ... RETURNING + INSERT, one transaction."""
    import asyncpg  # type: ignore[import-untyped]

    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_floor_tokens (id uuid PRIMARY KEY,"
                " session_id uuid NOT NULL, token_hash varchar(64) UNIQUE NOT NULL,"
                " parent_id uuid, issued_at"
                " timestamptz NOT NULL, expires_at timestamptz NOT NULL, consumed_at timestamptz)"
            )
        consume = (
            "UPDATE bench_floor_tokens SET consumed_at = $2 WHERE token_hash = $1"
            " AND consumed_at IS NULL AND expires_at > $2 RETURNING id, session_id"
        )
        insert = (
            "INSERT INTO bench_floor_tokens (id, session_id, token_hash, parent_id, issued_at,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6)"
        )

        async def make_op(_: int) -> Callable[[], Awaitable[None]]:
            first = _new_token()[1]
            now = datetime.now(UTC)
            async with pool.acquire() as conn:
                await conn.execute(
                    insert, uuid.uuid4(), uuid.uuid4(), first, None, now, now + timedelta(hours=1)
                )
            current = [first]

            async def op() -> None:
                now = datetime.now(UTC)
                successor = _new_token()[1]
                async with pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(consume, current[0], now)
                    assert row is not None
                    await conn.execute(
                        insert,
                        uuid.uuid4(),
                        row["session_id"],
                        successor,
                        row["id"],
                        now,
                        now + timedelta(hours=1),
                    )
                current[0] = successor

            return op

        return await timed_clients(clients, REFRESHES_PER_CLIENT[clients], make_op)
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS bench_floor_tokens")
        await pool.close()


async def floor_sql_sqlite(path: Path, clients: int) -> Run:
    """The same rotation over sqlite3 (WAL, BEGIN IMMEDIATE), one connection per client."""
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_floor_tokens (id TEXT PRIMARY KEY,"
        " session_id TEXT NOT NULL, token_hash TEXT UNIQUE NOT NULL,"
        " parent_id TEXT, issued_at TEXT NOT NULL,"
        " expires_at TEXT NOT NULL, consumed_at TEXT)"
    )
    setup.close()
    local = threading.local()

    def connection() -> sqlite3.Connection:
        if not hasattr(local, "conn"):
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=NORMAL")
            local.conn = conn
        conn_: sqlite3.Connection = local.conn
        return conn_

    insert = (
        "INSERT INTO bench_floor_tokens (id, session_id, token_hash, parent_id, issued_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?)"
    )
    consume = (
        "UPDATE bench_floor_tokens SET consumed_at = ? WHERE token_hash = ? AND consumed_at IS NULL"
        " AND expires_at > ? RETURNING id, session_id"
    )

    def rotate(current: list[str]) -> None:
        conn = connection()
        now = datetime.now(UTC)
        later = (now + timedelta(hours=1)).isoformat()
        successor = _new_token()[1]
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(consume, (now.isoformat(), current[0], now.isoformat())).fetchone()
        assert row is not None
        conn.execute(insert, (str(uuid.uuid4()), row[1], successor, row[0], now.isoformat(), later))
        conn.execute("COMMIT")
        current[0] = successor

    loop = asyncio.get_running_loop()
    # One thread per client, like aiosqlite gives each connection its own thread.
    with ThreadPoolExecutor(max_workers=clients) as pool:

        async def make_op(_: int) -> Callable[[], Awaitable[None]]:
            first = _new_token()[1]
            now = datetime.now(UTC)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute(
                insert,
                (
                    str(uuid.uuid4()),
                    str(uuid.uuid4()),
                    first,
                    None,
                    now.isoformat(),
                    (now + timedelta(hours=1)).isoformat(),
                ),
            )
            conn.close()
            current = [first]
            return lambda: loop.run_in_executor(pool, rotate, current)

        return await timed_clients(clients, REFRESHES_PER_CLIENT[clients], make_op)


# --- the run ----------------------------------------------------------------------------


async def measure_backend(
    backend: str, url: str | None, workers: int, rounds: int, scratch: Path
) -> list[Row]:
    """Each round measures every (workload, floor) pair at each concurrency, the service and
    its floor in alternating order; a row holds the medians over rounds of each figure."""
    cwd = scratch / backend
    cwd.mkdir()
    # Many clients log in as one user from one address, at once: the abuse limits (which
    # count an attempt while its password is checked) are not what this measures.
    env = {
        "AUTHSVC_LOGIN_MAX_ATTEMPTS": "1000000",
        "AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000000",
        "AUTHSVC_REGISTER_MAX_PER_ADDRESS": "1000000",
        "AUTHSVC_PASSWORD_HASH_QUEUE_MAX": "1000000",
    }
    if url:
        env["AUTHSVC_DATABASE_URL"] = url
    server = Server(cwd, env, workers)
    figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}

    def record(name: str, clients: int, run: Run) -> None:
        figures.setdefault((name, clients), []).append(summary(run))

    async def sql_floor(clients: int) -> Run:
        if url:
            return await floor_sql_postgres(url, clients)
        return await floor_sql_sqlite(cwd / "floor.db", clients)

    try:
        # Warm up: every worker's pool, the dummy hash, the code paths.
        await bench_jwks(server.url, 4)
        await bench_refresh(server.url, 4)
        for round_ in range(rounds):
            for clients in CONCURRENCY:
                pairs: list[tuple[str, Awaitable[Run]]] = [
                    ("argon2", floor_argon2(clients)),
                    ("login", bench_login(server.url, clients)),
                    ("sql", sql_floor(clients)),
                    ("jwks", bench_jwks(server.url, clients)),
                    ("refresh", bench_refresh(server.url, clients)),
                ]
                # Coroutines only start when awaited: the order below is the order run.
                for name, run in pairs if round_ % 2 == 0 else reversed(pairs):
                    record(name, clients, await run)
            during, idle = await bench_stall(server.url)
            record("stall", 1, during)
            record("idle", 1, idle)
            print(f"  {backend}: round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    except BaseException:
        server.stop()
        log = (cwd / "serve.log").read_text(errors="replace").splitlines()
        unusual = [line for line in log if " 200 OK" not in line and " 201 " not in line]
        print(
            "\n".join(["--- serve.log, lines other than 200/201:", *unusual[-40:]]), file=sys.stderr
        )
        raise
    server.stop()

    def med(name: str, clients: int) -> tuple[float, float, float]:
        values = figures[(name, clients)]
        return (
            statistics.median(v[0] for v in values),
            statistics.median(v[1] for v in values),
            statistics.median(v[2] for v in values),
        )

    rows: list[Row] = []
    for clients in CONCURRENCY:
        logins = LOGINS_PER_CLIENT[clients] * clients
        refreshes = REFRESHES_PER_CLIENT[clients] * clients
        rows.append(
            Row(
                backend,
                "login",
                clients,
                logins,
                *med("login", clients),
                "argon2 verify",
                *med("argon2", clients),
            )
        )
        rows.append(
            Row(
                backend,
                "refresh",
                clients,
                refreshes,
                *med("refresh", clients),
                "hand SQL",
                *med("sql", clients),
            )
        )
        rows.append(
            Row(
                backend,
                "refresh",
                clients,
                refreshes,
                *med("refresh", clients),
                "GET jwks",
                *med("jwks", clients),
            )
        )
    rows.append(Row(backend, "jwks@50/s", 1, 100, *med("stall", 1), "same, idle", *med("idle", 1)))
    print_rows(rows)
    return rows


HEADER = (
    f"{'backend':<10} {'op':<9} {'clients':>7} {'n':>4} {'median':>7} {'p95':>7} {'/s':>6}"
    f"  {'floor':<13} {'median':>7} {'p95':>7} {'/s':>6}  {'x med':>6} {'x p95':>6} {'x /s':>6}"
)


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        print(
            f"{r.backend:<10} {r.operation:<9} {r.clients:>7} {r.samples:>4} {r.median_ms:>7.1f}"
            f" {r.p95_ms:>7.1f} {r.per_second:>6.0f}  {r.floor:<13} {r.floor_median_ms:>7.2f}"
            f" {r.floor_p95_ms:>7.2f} {r.floor_per_second:>6.0f}  {r.ratio_median:>6.1f}"
            f" {r.ratio_p95:>6.1f} {r.per_second / r.floor_per_second:>6.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("AUTHSVC_BENCH_DATABASE_URL"),
        help="postgresql+asyncpg:// URL of a throwaway database (default: "
        "$AUTHSVC_BENCH_DATABASE_URL; PostgreSQL is skipped without one)",
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=2, help="authsvc serve --workers")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    print(
        f"authsvc serve --workers {args.workers}, {os.cpu_count()} CPUs, default argon2"
        f" parameters, medians over {args.rounds} rounds; latencies in ms, /s = calls per"
        " second; x = service / floor"
    )
    print(HEADER)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        for backend in args.backends.split(","):
            if backend == "postgresql" and not args.pg_url:
                print("postgresql: skipped (no --pg-url)")
                continue
            url = args.pg_url if backend == "postgresql" else None
            rows += asyncio.run(measure_backend(backend, url, args.workers, args.rounds, Path(tmp)))
    if args.json:
        data = [
            {**asdict(r), "ratio_median": r.ratio_median, "ratio_p95": r.ratio_p95} for r in rows
        ]
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
