"""The benchmark: authsvc against a hand-written floor, in one run (``scripts/bench``).

Starts ``authsvc serve --workers 2`` on PostgreSQL and, in the same run, the floor app
(bench/floor.py: FastAPI + raw asyncpg doing the same work, also 2 workers), each alone
while measured, in alternating order over the rounds; drives them with load generators
that are not Python clients (wrk for W1, autocannon and an open-loop pacer for the rest:
bench/load.js); reads the servers' CPU time from /proc (per worker, plus the PostgreSQL
backends serving the benchmark's database); and prints medians over the rounds with the
ratios to the targets:

    W1  GET /me with a bearer token, 32 connections (wrk)            >= 0.6x the floor's rate
    W2  refresh chain, 32 connections (each logs in once, then       >= 0.7x the floor's rate
        refreshes with the token it just got; any non-200 is an error)
    W3  login, 4 connections                                         >= 0.85x raw argon2 at
                                                                        4 threads
    W4  GET /me at a fixed 50/s, latency from each request's         p99 during W3 <= 3x idle
        scheduled start: idle, then while W3 runs
    W5  200-connection login flood: peak RSS per worker, 503s        RSS after <= 150 MB
    vol W1/W2 again on a kept database with 100k users, 300k live sessions, 3M refresh
        tokens and 3M audit rows (seeded once by SQL), and ``authsvc purge`` timed there

Only ratios inside one run mean something on a shared machine; see the README.
``--smoke`` runs every workload for about two seconds on a tiny volume in throwaway databases
and checks only that every row has numbers (CI runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authsvc.config import Settings
from authsvc.security.passwords import HASH_THREAD_NICE

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
PASSWORD = "bench horse battery staple 7"  # noqa: S105 - the benchmark users'
PREFIX = "benchuser"
USERS = 32
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {"W1": 0.6, "W2": 0.7, "W3": 0.85, "W4": 3.0, "W5": 150.0}


@dataclass(frozen=True)
class Plan:
    smoke: bool
    rounds: int
    duration: float
    warmup: float
    flood: int
    volume: tuple[int, int, int, int]  # users, sessions, refresh tokens, audit rows
    purge_sessions: int
    pg: str
    volume_db: str
    skip_volume: bool
    profile: str | None
    keep: bool


def full_plan(args: argparse.Namespace) -> Plan:
    smoke = bool(args.smoke)
    return Plan(
        smoke=smoke,
        rounds=args.rounds or (1 if smoke else 2),
        # 2 s in the smoke run: on a saturated CI machine a login can take a second.
        duration=args.duration or (2.0 if smoke else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.0 if smoke else 2.0),
        flood=args.flood or (20 if smoke else 200),
        volume=(100, 300, 3_000, 3_000) if smoke else (100_000, 300_000, 3_000_000, 3_000_000),
        purge_sessions=30 if smoke else 30_000,
        pg=args.pg.rstrip("/"),
        volume_db=args.volume_db,
        skip_volume=args.skip_volume,
        profile=args.profile,
        keep=args.keep,
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- /proc -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process, in seconds."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / TICK


def runqueue_wait(pids: list[int]) -> dict[str, float]:
    """Seconds each thread of these processes spent runnable but waiting for a CPU
    (schedstat), by thread id; high when other processes (or the load generator) hold the
    cores."""
    waits = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                waits[task.parent.name] = int(task.read_text().split()[1]) / 1e9
    return waits


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pg_backends(dbname: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to ``dbname`` (their process title
    is ``postgres: [CLUSTER:] USER DB HOST(PORT) STATE``)."""
    backends = {}
    for pid in _all_pids():
        title = _cmdline(pid).split()
        if title[:1] == ["postgres:"] and dbname in title[2:4]:
            cpu = cpu_seconds(pid)
            if cpu is not None:
                backends[pid] = cpu
    return backends


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process group that this run started (and only ever signals by its id)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, logfile: Path):
        self.name, self.argv, self.env, self.port, self.logfile = name, argv, env, port, logfile
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.logfile.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.logfile}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200 and (
                    len(self.workers()) == 2
                ):
                    time.sleep(0.5)  # both workers are listening, not just the first
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready; see {self.logfile}")

    def workers(self) -> list[int]:
        assert self.proc is not None
        return sorted(p for p in descendants(self.proc.pid) if "spawn_main" in _cmdline(p))

    def tree(self) -> list[int]:
        assert self.proc is not None
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- load generators -------------------------------------------------------------------------


def node(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(BENCH / "load.js"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load.js {args[0]} failed: {out.stderr.strip()}")
    return dict(json.loads(out.stdout))


def node_background(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["node", str(BENCH / "load.js"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"wrk latency {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def wrk(url: str, token: str, connections: int, duration: float) -> dict[str, Any]:
    seconds = max(1, round(duration))
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not total:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    elapsed = float(total[2]) / (1000 if total[3] == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    bad = int(non2xx[1]) if non2xx else 0
    socket_errors = sum(int(n) for n in sockets.groups()) if sockets else 0
    ok = int(total[1]) - bad
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if len(percentiles) != 2:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "ok": ok,
        "duration": elapsed,
        "rate": ok / elapsed,
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "errors": bad + socket_errors,
    }


# -- measurement -----------------------------------------------------------------------------


@dataclass
class Sample:
    system: str
    workload: str
    phase: str
    round: int
    ok: int
    duration: float
    rate: float
    p50: float | None
    p99: float | None
    errors: int
    server_cpu: float | None = None  # seconds, every process of the server
    pg_cpu: float | None = None  # seconds, the backends of the server's database
    server_wait: float | None = None  # seconds its threads waited for a CPU (runqueue)
    worker_cpu: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.server_cpu is None or not self.ok:
            return None
        return 1000 * self.server_cpu / self.ok

    @property
    def pg_ms_per_request(self) -> float | None:
        if self.pg_cpu is None or not self.ok:
            return None
        return 1000 * self.pg_cpu / self.ok


def measure(
    system: str,
    workload: str,
    phase: str,
    rnd: int,
    server: Server | None,
    dbname: str | None,
    load: Callable[[], dict[str, Any]],
) -> Sample:
    pids = server.tree() if server else []
    workers = server.workers() if server else []
    before = {pid: cpu_seconds(pid) or 0.0 for pid in pids}
    wait_before = runqueue_wait(pids)
    pg_before = pg_backends(dbname) if dbname else {}
    result = load()
    after = {pid: cpu_seconds(pid) for pid in pids}
    wait_after = runqueue_wait(pids)
    pg_after = pg_backends(dbname) if dbname else {}
    sample = Sample(
        system=system,
        workload=workload,
        phase=phase,
        round=rnd,
        ok=int(result["ok"]),
        duration=float(result["duration"]),
        rate=float(result["rate"]),
        p50=result.get("p50"),
        p99=result.get("p99"),
        errors=int(result["errors"]),
        extra={
            k: v
            for k, v in result.items()
            if k not in {"ok", "duration", "rate", "p50", "p99", "errors"}
        },
    )
    if server:
        sample.server_cpu = sum((after[p] or before[p]) - before[p] for p in pids)
        # threads that ended meanwhile are left out; new ones count from their start
        sample.server_wait = sum(w - wait_before.get(t, 0.0) for t, w in wait_after.items())
        sample.worker_cpu = [(after[p] or before[p]) - before[p] for p in workers]
    if dbname:
        sample.pg_cpu = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
    log(
        f"{phase:6} r{rnd} {system:8} {workload:10} {sample.rate:9.1f}/s"
        f" p50 {_fmt(sample.p50)} p99 {_fmt(sample.p99)} ms, errors {sample.errors}"
        f", CPU {_fmt(sample.cpu_ms_per_request, 2)}+{_fmt(sample.pg_ms_per_request, 2)} ms/req"
        f", workers {' / '.join(f'{c:.1f}s' for c in sample.worker_cpu)}"
    )
    return sample


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


class RssSampler(threading.Thread):
    """Peak RSS of each worker, sampled every 50 ms while a workload runs."""

    def __init__(self, workers: list[int]) -> None:
        super().__init__(daemon=True)
        self.peak = dict.fromkeys(workers, 0.0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_mb(pid) or 0.0)


# -- databases -------------------------------------------------------------------------------


def dsn(plan: Plan, db: str) -> str:
    return f"{plan.pg}/{db}"


def sqlalchemy_url(plan: Plan, db: str) -> str:
    return dsn(plan, db).replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin(plan: Plan, *statements: str) -> None:
    conn = await asyncpg.connect(dsn(plan, "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def recreate_db(plan: Plan, db: str) -> None:
    asyncio.run(
        _admin(plan, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', f'CREATE DATABASE "{db}"')
    )


def drop_db(plan: Plan, db: str) -> None:
    asyncio.run(_admin(plan, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


async def _sql(plan: Plan, db: str, *statements: str, fetch: str | None = None) -> Any:
    conn = await asyncpg.connect(dsn(plan, db))
    try:
        for statement in statements:
            await conn.execute(statement)
        return await conn.fetch(fetch) if fetch else None
    finally:
        await conn.close()


def sql(plan: Plan, db: str, *statements: str, fetch: str | None = None) -> Any:
    return asyncio.run(_sql(plan, db, *statements, fetch=fetch))


def authsvc_env(plan: Plan, db: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "PROMETHEUS_"))}
    env.update(
        AUTHSVC_DATABASE_URL=sqlalchemy_url(plan, db),
        AUTHSVC_DATA_DIR=str(workdir / "var"),
        AUTHSVC_JWT_PRIVATE_KEY_FILE=str(workdir / "es256.pem"),
        AUTHSVC_LOG_FORMAT="json",
        # Generous throttles: the benchmark registers and logs in from one address.
        AUTHSVC_REGISTER_MAX_PER_ADDRESS="1000000",
        AUTHSVC_LOGIN_MAX_ATTEMPTS="1000000",
        AUTHSVC_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="1000000",
        # The purge is timed on its own (authsvc purge), never in the middle of a workload.
        AUTHSVC_PURGE_INTERVAL_SECONDS="0",
    )
    return env


def migrate(plan: Plan, db: str, workdir: Path) -> None:
    subprocess.run(
        [str(BIN / "authsvc"), "migrate"],
        env=authsvc_env(plan, db, workdir),
        cwd=workdir,
        check=True,
        capture_output=True,
    )


def password_hash() -> str:
    """A hash of PASSWORD at the service's argon2 parameters (what registration stores)."""
    return argon2_hasher().hash(PASSWORD)


def argon2_hasher() -> PasswordHasher:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return PasswordHasher(
        time_cost=settings.passwords.argon2_time_cost,
        memory_cost=settings.passwords.argon2_memory_cost,
        parallelism=settings.passwords.argon2_parallelism,
    )


def insert_bench_users(plan: Plan, db: str, hashed: str) -> None:
    sql(
        plan,
        db,
        "INSERT INTO users (id, username, password_hash, created_at)"
        f" SELECT gen_random_uuid(), '{PREFIX}' || i, '{hashed}', now()"
        f" FROM generate_series(0, {USERS - 1}) i ON CONFLICT (username) DO NOTHING",
    )


def seed_volume(plan: Plan, workdir: Path, hashed: str) -> None:
    """100k users, 300k live sessions, 3M refresh tokens (a chain of 10 per session, the
    newest live), 3M audit rows, by SQL; once, in a database kept between runs."""
    users, sessions, tokens, audit = plan.volume
    wanted = f"{users},{sessions},{tokens},{audit}"
    db = plan.volume_db
    with contextlib.suppress(asyncpg.InvalidCatalogNameError, asyncpg.UndefinedTableError):
        rows = sql(plan, db, fetch="SELECT sizes FROM bench_volume")
        if rows and rows[0]["sizes"] == wanted:
            log(f"volume database {db} already seeded ({wanted}); reusing it")
            migrate(plan, db, workdir)
            return
    log(
        f"seeding {db}: {users:,} users, {sessions:,} sessions, {tokens:,} tokens,"
        f" {audit:,} audit rows"
    )
    started = time.monotonic()
    recreate_db(plan, db)
    migrate(plan, db, workdir)
    per = tokens // sessions
    future = "now() + interval '100 years'"
    sql(
        plan,
        db,
        "SET synchronous_commit = off",
        "SET maintenance_work_mem = '256MB'",
        "INSERT INTO users (id, username, password_hash, created_at)"
        f" SELECT md5('u' || i)::uuid, 'vol' || i, '{hashed}', now() - interval '30 days'"
        f" FROM generate_series(1, {users}) i",
        "INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at, ip_address,"
        " user_agent)"
        f" SELECT md5('s' || i)::uuid, md5('u' || (1 + i % {users}))::uuid, now(), {future},"
        " now(), '10.0.0.1', 'bench'"
        f" FROM generate_series(1, {sessions}) i",
        "INSERT INTO refresh_tokens (id, session_id, token_hash, parent_id, issued_at,"
        " expires_at, consumed_at)"
        f" SELECT md5('t' || i)::uuid, md5('s' || (1 + i / {per}))::uuid,"
        " encode(sha256(convert_to('t' || i, 'UTF8')), 'hex'),"
        f" CASE WHEN i % {per} > 0 THEN md5('t' || (i - 1))::uuid END, now(), {future},"
        f" CASE WHEN i % {per} < {per - 1} THEN now() END"
        f" FROM generate_series(0, {tokens - 1}) i",
        "INSERT INTO audit_events (occurred_at, event, user_id, session_id, ip_address,"
        " user_agent)"
        f" SELECT now() - i * interval '1 second', 'refresh_rotated',"
        f" md5('u' || (1 + i % {users}))::uuid, md5('s' || (1 + i % {sessions}))::uuid,"
        " '10.0.0.1', 'bench'"
        f" FROM generate_series(1, {audit}) i",
        "VACUUM ANALYZE",
        "CREATE TABLE bench_volume (sizes text NOT NULL, seeded_at timestamptz NOT NULL)",
        f"INSERT INTO bench_volume VALUES ('{wanted}', now())",
    )
    log(f"seeded {db} in {time.monotonic() - started:.0f} s")


def time_purge(plan: Plan, workdir: Path, run_id: str) -> dict[str, Any]:
    """Adds sessions past their cap (10 tokens each) to the volume database and times
    ``authsvc purge`` removing them from among the live volume."""
    n, per = plan.purge_sessions, plan.volume[2] // plan.volume[1]
    users = plan.volume[0]
    past = "now() - interval '1 day'"
    sql(
        plan,
        plan.volume_db,
        "SET synchronous_commit = off",
        "INSERT INTO sessions (id, user_id, created_at, expires_at, last_used_at)"
        f" SELECT md5('{run_id}s' || i)::uuid, md5('u' || (1 + i % {users}))::uuid,"
        f" now() - interval '2 days', {past}, {past} FROM generate_series(1, {n}) i",
        "INSERT INTO refresh_tokens (id, session_id, token_hash, issued_at, expires_at,"
        " consumed_at)"
        f" SELECT md5('{run_id}t' || i)::uuid, md5('{run_id}s' || (1 + i / {per}))::uuid,"
        f" encode(sha256(convert_to('{run_id}t' || i, 'UTF8')), 'hex'), {past}, {past}, {past}"
        f" FROM generate_series(0, {n * per - 1}) i",
        "ANALYZE sessions",
        "ANALYZE refresh_tokens",
    )
    started = time.monotonic()
    out = subprocess.run(
        [str(BIN / "authsvc"), "purge"],
        env=authsvc_env(plan, plan.volume_db, workdir),
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    seconds = time.monotonic() - started
    log(f"authsvc purge: {out} in {seconds:.1f} s")
    return {"sessions_added": n, "tokens_added": n * per, "output": out, "seconds": seconds}


# -- one system alone on the machine ---------------------------------------------------------


def authsvc_server(plan: Plan, db: str, workdir: Path, tag: str) -> Server:
    port = free_port()
    return Server(
        "authsvc",
        [str(BIN / "authsvc"), "serve", "--workers", "2", "--port", str(port)],
        authsvc_env(plan, db, workdir),
        port,
        workdir / f"authsvc-{tag}.log",
    )


def floor_server(plan: Plan, db: str, workdir: Path, tag: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(BENCH_FLOOR_DSN=dsn(plan, db), BENCH_FLOOR_KEY=str(workdir / "es256.pem"))
    # As authsvc serve: uvicorn's supervisor, a socket per worker (bench/serve_floor.py).
    argv = [str(BIN / "python"), str(BENCH / "serve_floor.py"), str(port)]
    return Server("floor", argv, env, port, workdir / f"floor-{tag}.log")


def register_users(server: Server) -> None:
    """Seeds the benchmark's users through the API (201, or 409 when a round already did)."""

    async def go() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            gate = asyncio.Semaphore(4)

            async def one(i: int) -> None:
                async with gate:
                    body = {"username": f"{PREFIX}{i}", "password": PASSWORD}
                    res = await client.post("/register", json=body)
                    if res.status_code not in (201, 409):
                        raise RuntimeError(f"register: {res.status_code} {res.text}")

            await asyncio.gather(*(one(i) for i in range(USERS)))

    asyncio.run(go())


def access_token(server: Server) -> str:
    res = httpx.post(
        f"{server.url}/login", json={"username": f"{PREFIX}0", "password": PASSWORD}, timeout=60
    )
    res.raise_for_status()
    return str(res.json()["access_token"])


def login_args(server: Server) -> list[str]:
    return ["--url", server.url, "--prefix", PREFIX, "--users", str(USERS), "--password", PASSWORD]


def w1(plan: Plan, server: Server, token: str) -> Callable[[], dict[str, Any]]:
    return lambda: wrk(f"{server.url}/me", token, 32, plan.duration)


def chain_logins(server: Server, n: int = 32) -> Path:
    """Each W2 connection's first login, before the measured window: a file of ``n`` fresh
    refresh tokens for bench/load.js."""

    async def go() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            gate = asyncio.Semaphore(8)

            async def one(i: int) -> str:
                async with gate:
                    body = {"username": f"{PREFIX}{i % USERS}", "password": PASSWORD}
                    res = await client.post("/login", json=body)
                    res.raise_for_status()
                    return str(res.json()["refresh_token"])

            return await asyncio.gather(*(one(i) for i in range(n)))

    path = server.logfile.with_suffix(f".tokens-{secrets.token_hex(4)}.json")
    path.write_text(json.dumps(asyncio.run(go())))
    return path


def w2(plan: Plan, server: Server, duration: float | None = None) -> Callable[[], dict[str, Any]]:
    tokens = chain_logins(server)
    args = [*login_args(server), "--connections", "32", "--tokens", str(tokens)]
    return lambda: node("chain", *args, "--duration", str(duration or plan.duration))


def w3(plan: Plan, server: Server, duration: float) -> list[str]:
    return [
        "post",
        *login_args(server),
        "--path",
        "/login",
        "--connections",
        "4",
        "--duration",
        str(duration),
        "--timeout",
        "60",
    ]


def w4(plan: Plan, server: Server, token: str) -> Callable[[], dict[str, Any]]:
    args = ["--url", server.url, "--path", "/me", "--token", token, "--rate", "50"]
    return lambda: node("paced", *args, "--duration", str(plan.duration))


def during_logins(plan: Plan, server: Server, token: str) -> dict[str, Any]:
    lead = 0.5 if plan.smoke else 1.0
    background = node_background(*w3(plan, server, plan.duration + 2 * lead))
    try:
        time.sleep(lead)
        result = w4(plan, server, token)()
    finally:
        stdout, stderr = background.communicate(timeout=120 + plan.duration)
    if background.returncode != 0:
        raise RuntimeError(f"W3 under W4 failed: {stderr}")
    result["logins"] = json.loads(stdout)
    return result


def run_authsvc(
    plan: Plan, db: str, workdir: Path, phase: str, rnd: int, full: bool
) -> list[Sample]:
    samples: list[Sample] = []
    server = authsvc_server(plan, db, workdir, f"{phase}-r{rnd}")
    with running(server):
        register_users(server)
        token = access_token(server)
        if plan.warmup:
            wrk(f"{server.url}/me", token, 32, plan.warmup)
        samples.append(measure("authsvc", "W1", phase, rnd, server, db, w1(plan, server, token)))
        if plan.warmup:
            w2(plan, server, plan.warmup)()
        samples.append(measure("authsvc", "W2", phase, rnd, server, db, w2(plan, server)))
        if not full:
            return samples
        samples.append(
            measure(
                "authsvc",
                "W3",
                phase,
                rnd,
                server,
                db,
                lambda: node(*w3(plan, server, plan.duration)),
            )
        )
        samples.append(
            measure("authsvc", "W4 idle", phase, rnd, server, db, w4(plan, server, token))
        )
        samples.append(
            measure(
                "authsvc",
                "W4 W3",
                phase,
                rnd,
                server,
                db,
                lambda: during_logins(plan, server, token),
            )
        )
        samples.append(flood(plan, server, db, phase, rnd))
    return samples


def flood(plan: Plan, server: Server, db: str, phase: str, rnd: int) -> Sample:
    workers = server.workers()
    sampler = RssSampler(workers)
    rss_before = {pid: rss_mb(pid) for pid in workers}
    sampler.start()
    n = str(plan.flood)
    args = [*login_args(server), "--path", "/login", "--connections", n, "--amount", n]
    try:
        sample = measure(
            "authsvc", "W5", phase, rnd, server, db, lambda: node("post", *args, "--timeout", "300")
        )
    finally:
        sampler.done.set()
        sampler.join()
    sample.extra["rss_before_mb"] = [rss_before[p] for p in workers]
    sample.extra["rss_peak_mb"] = [sampler.peak[p] for p in workers]
    sample.extra["rss_after_mb"] = [rss_mb(p) for p in workers]
    statuses = sample.extra.get("statuses", {})
    sample.extra["refused_503"] = int(statuses.get("503", 0))
    log(
        f"W5 flood of {n}: statuses {statuses}; RSS before/peak/after per worker (MB):"
        f" {sample.extra['rss_before_mb']} / {sample.extra['rss_peak_mb']} /"
        f" {sample.extra['rss_after_mb']}"
    )
    return sample


def run_floor(plan: Plan, db: str, workdir: Path, phase: str, rnd: int, full: bool) -> list[Sample]:
    samples: list[Sample] = []
    server = floor_server(plan, db, workdir, f"{phase}-r{rnd}")
    with running(server):
        token = access_token(server)
        if plan.warmup:
            wrk(f"{server.url}/me", token, 32, plan.warmup)
        samples.append(measure("floor", "W1", phase, rnd, server, db, w1(plan, server, token)))
        if plan.warmup:
            w2(plan, server, plan.warmup)()
        samples.append(measure("floor", "W2", phase, rnd, server, db, w2(plan, server)))
    if full:  # the raw argon2 rate, with no server running
        samples.append(measure("argon2", "W3", phase, rnd, None, None, lambda: raw_argon2(plan)))
    return samples


def raw_argon2(plan: Plan, threads: int = 4) -> dict[str, Any]:
    """argon2id verifications at the service's parameters from ``threads`` threads
    (argon2-cffi releases the GIL while hashing), each at the nice value of the service's
    hashing threads: on a machine that other work keeps busy, both get the same share."""
    hasher = argon2_hasher()
    hashed = hasher.hash(PASSWORD)
    latencies: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + plan.duration

    def loop() -> None:
        mine = []
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICE)
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            hasher.verify(hashed, PASSWORD)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "ok": len(latencies),
        "duration": elapsed,
        "rate": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
        "errors": 0,
    }


def profile_w2(plan: Plan, db: str, workdir: Path) -> None:
    """py-spy on both authsvc workers during W2, or W1 (samples of the thread holding the GIL, so
    idle threads and waits are left out); prints the top frames, own and total."""
    pyspy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(pyspy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    server = authsvc_server(plan, db, workdir, "profile")
    with running(server):
        register_users(server)
        seconds = str(max(2, round(plan.duration)))
        workload = plan.profile or "W2"
        if workload == "W1":
            load = w1(plan, server, access_token(server))
        else:
            w2(plan, server, 2)()
            load = w2(plan, server)  # the chains' first logins (argon2) before py-spy starts
        recorders = [
            subprocess.Popen(
                [
                    *(pyspy, "record", "-p", str(pid), "-d", seconds, "-r", "200", "-f", "raw"),
                    *("-o", str(workdir / f"w2-{pid}.txt"), "--nonblocking", "--gil"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in server.workers()
        ]
        time.sleep(0.5)
        result = measure("authsvc", workload, "profile", 1, server, db, load)
        for rec in recorders:
            rec.wait(timeout=60)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    packages: dict[str, int] = {}
    samples = 0
    for path in workdir.glob("w2-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            samples += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            package = _package(frames[-1])
            packages[package] = packages.get(package, 0) + n
            for frame in set(frames):
                if _package(frame) not in PLUMBING:
                    total[frame] = total.get(frame, 0) + n
    print(f"\n{workload} profile: {result.rate:.0f} req/s, {samples} samples over both workers")
    print("(py-spy --gil: the thread running Python code; waits and idle threads left out)")
    tables = (
        ("own time, by package", packages, 15),
        ("own time", own, 25),
        ("total time (frame on the stack; process start-up frames left out)", total, 40),
    )
    for title, counts, top in tables:
        print(f"\ntop {top} by {title}:")
        for frame, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {100 * n / max(1, samples):5.1f}%  {frame}")
    print(f"\nraw stacks (flamegraph.pl / speedscope input): {workdir}/w2-*.txt")


PLUMBING = {"<string>", "multiprocessing", "uvicorn/_subprocess", "asyncio", "uvicorn/server"}
PLUMBING |= {"uvicorn/_compat", "uvicorn/supervisors"}


def _package(frame: str) -> str:
    """``sqlalchemy`` for ``f (sqlalchemy/orm/session.py:12)``; ``uvicorn/server`` and the
    like for the start-up plumbing in PLUMBING."""
    match = re.search(r"\(([^:()]+):\d+\)$", frame)
    if not match:
        return "(native or unknown)"
    path = match[1].removesuffix(".py")
    for plumbing in PLUMBING:
        if path == plumbing or path.startswith(plumbing + "/"):
            return plumbing
    return path.split("/")[0]


# -- report ----------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


@dataclass
class Row:
    system: str
    workload: str
    phase: str
    rounds: int
    rate: float | None
    p50: float | None
    p99: float | None
    errors: float | None
    cpu_ms: float | None
    pg_ms: float | None
    worker_share: str
    cores: float | None
    waiting: float | None = None
    note: str = ""


def summarise(samples: list[Sample]) -> list[Row]:
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.phase, s.workload, s.system), []).append(s)
    rows = []
    for (phase, workload, system), group in groups.items():
        shares = []
        for s in group:
            if s.worker_cpu and sum(s.worker_cpu) > 0:
                shares.append("/".join(f"{100 * c / sum(s.worker_cpu):.0f}" for c in s.worker_cpu))
        note = ""
        if workload == "W5":
            last = group[-1].extra
            note = (
                f"{last['statuses']} of {last['sent']} sent; RSS MB per worker before"
                f" {_mb(last['rss_before_mb'])}, peak {_mb(last['rss_peak_mb'])},"
                f" after {_mb(last['rss_after_mb'])}"
            )
        rows.append(
            Row(
                system=system,
                workload=workload,
                phase=phase,
                rounds=len(group),
                rate=median([s.rate for s in group]),
                p50=median([s.p50 for s in group]),
                p99=median([s.p99 for s in group]),
                errors=median([float(s.errors) for s in group]),
                cpu_ms=median([s.cpu_ms_per_request for s in group]),
                pg_ms=median([s.pg_ms_per_request for s in group]),
                worker_share=" ".join(shares),
                cores=median(
                    [s.server_cpu / s.duration if s.server_cpu is not None else None for s in group]
                ),
                waiting=median(
                    [
                        s.server_wait / s.duration if s.server_wait is not None else None
                        for s in group
                    ]
                ),
                note=note,
            )
        )
    order = {"empty": 0, "volume": 1}
    work = {"W1": 0, "W2": 1, "W3": 2, "W4 idle": 3, "W4 W3": 4, "W5": 5}
    rows.sort(key=lambda r: (order.get(r.phase, 9), work.get(r.workload, 9), r.system != "authsvc"))
    return rows


def _mb(values: list[float | None]) -> str:
    return "/".join("-" if v is None else f"{v:.0f}" for v in values)


LABELS = {
    "W1": "W1 GET /me, 32 conn",
    "W2": "W2 refresh chain, 32 conn",
    "W3": "W3 login, 4 conn",
    "W4 idle": "W4 GET /me 50/s, idle",
    "W4 W3": "W4 GET /me 50/s, during W3",
    "W5": "W5 login flood",
}


def table(rows: list[Row]) -> str:
    head = (
        f"{'database':8} {'workload':27} {'system':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>9}"
        f" {'errors':>7} {'CPU ms/req':>10} {'+PG ms':>7} {'cores':>5} {'wait':>5}  workers CPU %"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        system = "argon2x4" if r.system == "argon2" else r.system
        lines.append(
            f"{r.phase:8} {LABELS.get(r.workload, r.workload):27} {system:8} {_fmt(r.rate):>9}"
            f" {_fmt(r.p50, 2):>8} {_fmt(r.p99, 2):>9} {_fmt(r.errors, 0):>7}"
            f" {_fmt(r.cpu_ms, 2):>10} {_fmt(r.pg_ms, 2):>7} {_fmt(r.cores, 2):>5}"
            f" {_fmt(r.waiting, 2):>5}"
            f"  {r.worker_share}"
        )
        if r.note:
            lines.append(f"{'':37} {r.note}")
    return "\n".join(lines)


def find(rows: list[Row], phase: str, workload: str, system: str) -> Row | None:
    return next(
        (r for r in rows if (r.phase, r.workload, r.system) == (phase, workload, system)), None
    )


def ratios(rows: list[Row]) -> tuple[str, list[dict[str, Any]]]:
    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    def rate(phase: str, workload: str, system: str) -> float | None:
        row = find(rows, phase, workload, system)
        return row.rate if row else None

    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, target: float, higher_is_better: bool) -> None:
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        checks.append(
            {
                "check": name,
                "value": value,
                "target": target,
                "met": met,
                "higher": higher_is_better,
            }
        )

    check(
        "W2 authsvc / floor (empty db)",
        div(rate("empty", "W2", "authsvc"), rate("empty", "W2", "floor")),
        TARGETS["W2"],
        True,
    )
    check(
        "W1 authsvc / floor (empty db)",
        div(rate("empty", "W1", "authsvc"), rate("empty", "W1", "floor")),
        TARGETS["W1"],
        True,
    )
    check(
        "W3 authsvc / raw argon2 x4",
        div(rate("empty", "W3", "authsvc"), rate("empty", "W3", "argon2")),
        TARGETS["W3"],
        True,
    )
    idle, busy = find(rows, "empty", "W4 idle", "authsvc"), find(rows, "empty", "W4 W3", "authsvc")
    check(
        "W4 p99 during W3 / idle",
        div(busy.p99 if busy else None, idle.p99 if idle else None),
        TARGETS["W4"],
        False,
    )
    flood_row = next((r for r in rows if r.workload == "W5"), None)
    rss_after: float | None = None
    if flood_row is not None:
        match = re.search(r"after ([\d/]+)", flood_row.note)
        if match:
            rss_after = max(float(v) for v in match[1].split("/"))
    check("W5 max RSS per worker after (MB)", rss_after, TARGETS["W5"], False)
    for workload in ("W2", "W1"):
        check(
            f"{workload} authsvc / floor (volume db)",
            div(rate("volume", workload, "authsvc"), rate("volume", workload, "floor")),
            TARGETS[workload],
            True,
        )
    lines = [f"{'check':36} {'measured':>9} {'target':>9}  met"]
    for c in checks:
        sign = ">=" if c["higher"] else "<="
        unit = "" if "MB" in c["check"] else "x"
        value = "-" if c["value"] is None else f"{c['value']:.2f}{unit}"
        met = "-" if c["met"] is None else ("yes" if c["met"] else "NO")
        lines.append(
            f"{c['check']:36} {value:>9} {sign + format(c['target'], 'g') + unit:>9}  {met}"
        )
    lines.append("")
    lines.append("not targets, but steadier on a busy machine (CPU per request does not depend on")
    lines.append("how much of the CPU the servers got):")

    def cpu(phase: str, workload: str, system: str) -> float | None:
        row = find(rows, phase, workload, system)
        if row is None or row.cpu_ms is None:
            return None
        return row.cpu_ms + (row.pg_ms or 0.0)

    for phase in ("empty", "volume"):
        for workload in ("W2", "W1"):
            value = div(cpu(phase, workload, "floor"), cpu(phase, workload, "authsvc"))
            if value is not None:
                label = f"{workload} CPU/request (+PG), floor / authsvc ({phase} db)"
                lines.append(f"  {label:48} {value:.2f}x")
    skewed = []
    for phase in ("empty", "volume"):
        for workload in ("W1", "W2"):
            ours, floor = (
                find(rows, phase, workload, "authsvc"),
                find(rows, phase, workload, "floor"),
            )
            if not (ours and floor and ours.cores and floor.cores):
                continue
            if not 2 / 3 <= ours.cores / floor.cores <= 3 / 2:
                skewed.append(f"{workload} {phase} {ours.cores:.2f} vs {floor.cores:.2f}")
    if skewed:
        lines.append(f"  NOTE cores used, authsvc vs floor: {'; '.join(skewed)}.")
        lines.append(
            "  The two got very different CPU shares (a busy machine, or one worker idle): those"
        )
        lines.append("  rate ratios say more about the scheduler than the code; read CPU/request.")
    for workload in ("W1", "W2"):
        value = div(rate("volume", workload, "authsvc"), rate("empty", workload, "authsvc"))
        if value is not None:
            lines.append(f"  {workload + ' authsvc req/s, volume / empty db':48} {value:.2f}x")
    return "\n".join(lines), checks


EXPECTED = [
    ("empty", "W1", "authsvc"),
    ("empty", "W1", "floor"),
    ("empty", "W2", "authsvc"),
    ("empty", "W2", "floor"),
    ("empty", "W3", "authsvc"),
    ("empty", "W3", "argon2"),
    ("empty", "W4 idle", "authsvc"),
    ("empty", "W4 W3", "authsvc"),
    ("empty", "W5", "authsvc"),
    ("volume", "W1", "authsvc"),
    ("volume", "W1", "floor"),
    ("volume", "W2", "authsvc"),
    ("volume", "W2", "floor"),
]


def incomplete(rows: list[Row], checks: list[dict[str, Any]], plan: Plan) -> list[str]:
    """What the table lacks: a row, a number in it, a successful request, a ratio."""
    problems = []
    for phase, workload, system in EXPECTED:
        if phase == "volume" and plan.skip_volume:
            continue
        row = find(rows, phase, workload, system)
        if row is None:
            problems.append(f"no row for {system} {workload} ({phase})")
            continue
        needed = {"req/s": row.rate, "p50": row.p50, "p99": row.p99, "errors": row.errors}
        if system != "argon2":
            needed |= {"CPU ms/req": row.cpu_ms, "PG ms/req": row.pg_ms}
        for name, value in needed.items():
            if value is None or math.isnan(value):
                problems.append(f"{system} {workload} ({phase}): no {name}")
        if not row.rate:
            problems.append(f"{system} {workload} ({phase}): no successful request")
    for c in checks:
        if c["value"] is None and not (plan.skip_volume and "volume" in c["check"]):
            problems.append(f"no value for {c['check']}")
    return problems


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="about 2 s per workload, tiny volume, throwaway databases;"
        " checks only that every row has numbers",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds, alternating which system goes first (default 2; smoke 1)",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds per measured workload (default 10; smoke 2)"
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up before W1 and W2 (default 2; smoke 0)"
    )
    parser.add_argument(
        "--flood", type=int, help="W5 connections, one login each (default 200; smoke 20)"
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server (default %(default)s)",
    )
    parser.add_argument(
        "--db",
        default="authsvc_bench",
        help="database for authsvc, recreated every run (default %(default)s;"
        " the floor's gets _floor appended)",
    )
    parser.add_argument(
        "--volume-db",
        default="authsvc_bench_volume",
        help="the large database, seeded once and kept (default %(default)s)",
    )
    parser.add_argument(
        "--skip-volume", action="store_true", help="leave out the large-database phase"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="W2",
        choices=["W1", "W2"],
        help="instead of the table: py-spy on both authsvc workers under W2 (or the workload"
        " given), top frames",
    )
    parser.add_argument(
        "--json", type=Path, help="also write every sample and the table's rows here"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (server logs, keys)"
    )
    args = parser.parse_args(argv)
    plan = full_plan(args)

    run_id = f"{os.getpid()}x{secrets.token_hex(3)}"
    db, floor_db = args.db, f"{args.db}_floor"
    if plan.smoke:  # throwaway names: CI and other checkouts may run at the same time
        db, floor_db = f"{args.db}_smoke_{run_id}", f"{args.db}_smoke_{run_id}_floor"
        plan = Plan(**{**asdict(plan), "volume_db": f"{args.db}_smoke_{run_id}_volume"})
    workdir = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    key = ec.generate_private_key(ec.SECP256R1())
    (workdir / "es256.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    started = time.monotonic()
    samples: list[Sample] = []
    purge: dict[str, Any] | None = None
    try:
        hashed = password_hash()
        recreate_db(plan, db)
        recreate_db(plan, floor_db)
        migrate(plan, floor_db, workdir)
        insert_bench_users(plan, floor_db, hashed)
        if plan.profile:
            profile_w2(plan, db, workdir)
            return 0
        for rnd in range(1, plan.rounds + 1):
            order = ["authsvc", "floor"] if rnd % 2 else ["floor", "authsvc"]
            for system in order:
                runner = run_authsvc if system == "authsvc" else run_floor
                target = db if system == "authsvc" else floor_db
                samples += runner(plan, target, workdir, "empty", rnd, True)
        if not plan.skip_volume:
            seed_volume(plan, workdir, hashed)
            insert_bench_users(plan, plan.volume_db, hashed)
            for rnd in range(1, plan.rounds + 1):
                order = ["authsvc", "floor"] if rnd % 2 else ["floor", "authsvc"]
                for system in order:
                    runner = run_authsvc if system == "authsvc" else run_floor
                    samples += runner(plan, plan.volume_db, workdir, "volume", rnd, False)
            purge = time_purge(plan, workdir, run_id)
    finally:
        if plan.smoke:
            for name in (db, floor_db, plan.volume_db):
                drop_db(plan, name)
        if not (plan.keep or plan.profile):
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started

    rows = summarise(samples)
    ratio_text, checks = ratios(rows)
    users, sessions, tokens, audit = plan.volume
    print()
    print(
        f"authsvc vs the hand-written floor: medians of {plan.rounds} round(s), alternating order,"
        f" {plan.duration:g} s per workload{' (SMOKE: numbers mean nothing)' if plan.smoke else ''}"
    )
    print(
        f"database 'empty': fresh, {USERS} users; 'volume': {users:,} users, {sessions:,} live"
        f" sessions, {tokens:,} refresh tokens, {audit:,} audit rows"
    )
    print(
        "CPU ms/req: all the server's processes; +PG ms: its PostgreSQL backends; cores: server"
        " CPU-s per wall-s; wait: its threads' seconds runnable but waiting for a CPU, per wall-s"
        " (high = the cores were busy elsewhere); workers CPU %: each worker's share, per round\n"
    )
    print(table(rows))
    print()
    print(ratio_text)
    if purge is not None:
        print(
            f"\nauthsvc purge on the volume database: {purge['output']} in {purge['seconds']:.1f} s"
            f" (added {purge['sessions_added']:,} capped sessions with {purge['tokens_added']:,}"
            " tokens)"
        )
    print(f"\nwhole run: {elapsed:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "samples": [asdict(s) for s in samples],
                    "rows": [asdict(r) for r in rows],
                    "checks": checks,
                    "purge": purge,
                    "seconds": elapsed,
                },
                indent=2,
            )
        )
    problems = incomplete(rows, checks, plan)
    for problem in problems:
        print(f"bench: INCOMPLETE: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
