#!/usr/bin/env python
"""Memory of a real ``authsvc serve``, per process, idle and after bursts of logins.

Not a test: a rerunnable measurement behind the Kubernetes requests and limits
(deploy/kubernetes, docs/deployment.md). It starts ``authsvc serve --workers N`` in production
mode on PostgreSQL with the default argon2id cost, then reads every process of the server
(the supervisor and its workers) from /proc:

- ``rss``  resident set (VmRSS), what ``ps`` shows;
- ``pss``  proportional set (smaps_rollup): shared pages split between the processes that map
           them, so the sum over processes is close to what the container's cgroup charges;
- ``hwm``  the peak resident set so far (VmHWM).

Phases: ``idle`` (ready, no request yet), ``warm`` (a few requests of every kind), then
``--bursts`` bursts of ``--clients`` concurrent clients logging in ``--logins`` times each
(``burst1``, ``burst2``, ..., each read right after it; ``settled`` a few seconds after the last).
The later bursts show whether memory keeps growing or has plateaued. Each worker hashes at most
``AUTHSVC_PASSWORD_HASH_CONCURRENCY`` passwords at once (``--hash-concurrency``), each holding
``AUTHSVC_ARGON2_MEMORY_COST`` KiB while it runs: that product is printed beside the growth.

The baseline in the same run: the same interpreter that has only imported the application
(``import authsvc.main``), read the same way.

Then argon2id alone, in child processes, ``--hash-concurrency`` at a time, ``--floor-hashes``
hashes, three ways in alternating order over ``--rounds`` (medians): ``own`` in the same few
threads (what the service's PasswordHasher does), ``fresh`` in a new thread each time (what a
shared thread pool that grows and shrinks amounts to), and ``own+mmap`` like ``own`` with
glibc's ``MALLOC_MMAP_THRESHOLD_=131072`` (every buffer mapped and returned per hash). Each
reports the CPU time per hash (all threads, user + system: steadier than wall time on a shared
machine) and the resident set after the hashes.

Also measured: the bytes written under TMPDIR (Prometheus' multiprocess files with
``--workers`` > 1; the emptyDir for /tmp is sized from it).

Usage (from the repository root; the database should be a throwaway, the server migrates it
and the bench adds users):
    .venv/bin/python bench/memory.py --pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/db
    .venv/bin/python bench/memory.py --pg-url ... --workers 1 --hash-concurrency 2 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark user's
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            kids = children(current)
        except FileNotFoundError:
            continue
        out.extend(kids)
        todo.extend(kids)
    return out


def read_process(pid: int) -> dict[str, float]:
    """rss, hwm and pss of one process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    pss = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    return {"rss": fields["VmRSS"], "hwm": fields["VmHWM"], "pss": pss}


def cmdline(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return raw.strip()


def snapshot(root: int) -> dict[str, Any]:
    """Every process of the server: the supervisor (root) and each descendant."""
    procs: dict[str, Any] = {}
    for pid in [root, *descendants(root)]:
        try:
            procs[str(pid)] = {"cmd": cmdline(pid)[:80], **read_process(pid)}
        except FileNotFoundError:
            continue
    return procs


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Server:
    def __init__(self, cwd: Path, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).with_name("authsvc")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "authsvc"]
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AUTHSVC_") and k not in ("PROMETHEUS_MULTIPROC_DIR", MALLOC_VAR)
        }
        self.log = (cwd / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=cwd,
            env={**clean, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.workers = workers
        deadline = time.monotonic() + 90
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"authsvc serve exited: see {cwd / 'serve.log'}")
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("authsvc serve did not get ready in 90 s")
            time.sleep(0.2)
        # Every worker has run its lifespan (the dummy hash included) once each answers.
        while time.monotonic() < deadline:
            if self._workers_up() >= workers:
                return
            time.sleep(0.2)
        raise SystemExit("not every worker came up")

    def _workers_up(self) -> int:
        if self.workers == 1:
            return 1
        body = httpx.get(self.url + "/metrics").text
        for line in body.splitlines():
            if line.startswith("authsvc_workers "):
                return int(float(line.split()[1]))
        return 0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def warm(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(4):
            name = f"warm{uuid.uuid4().hex[:12]}"
            body = {"username": name, "password": PASSWORD}
            (await http.post("/register", json=body)).raise_for_status()
            pair = (await http.post("/login", json=body)).raise_for_status().json()
            auth = {"Authorization": f"Bearer {pair['access_token']}"}
            (await http.get("/me", headers=auth)).raise_for_status()
            await http.get("/sessions", headers=auth)
            (
                await http.post("/generateTokens", json={"refresh_token": pair["refresh_token"]})
            ).raise_for_status()
            await http.get("/.well-known/jwks.json")
            await http.get("/.well-known/oauth-authorization-server")
            await http.get("/metrics")
            await http.get("/readyz")
            await http.get("/docs")


async def burst(url: str, clients: int, logins: int) -> tuple[dict[int, int], float]:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        names = []
        for _ in range(clients):
            name = f"mem{uuid.uuid4().hex[:12]}"
            (
                await http.post("/register", json={"username": name, "password": PASSWORD})
            ).raise_for_status()
            names.append(name)
        statuses: dict[int, int] = {}

        async def client(name: str) -> None:
            for _ in range(logins):
                r = await http.post("/login", json={"username": name, "password": PASSWORD})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(n) for n in names))
        return statuses, time.perf_counter() - t0


MALLOC_VAR = "MALLOC_MMAP_THRESHOLD_"
ARGON2_FLOOR = """
import sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pwdlib.hashers.argon2 import Argon2Hasher
mode, threads, count, memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
hasher = Argon2Hasher(memory_cost=memory, time_cost=2, parallelism=1)
def one(_=None):
    hasher.hash("correct horse battery staple")
cpu = time.process_time()
if mode == "fresh":
    for _ in range(count // threads):
        batch = [threading.Thread(target=one) for _ in range(threads)]
        for t in batch: t.start()
        for t in batch: t.join()
else:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(count)))
cpu = time.process_time() - cpu
rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
print(cpu / count * 1000, int(rss) / 1024)
"""
FLOOR_MODES = ("own", "fresh", "own+mmap")


def argon2_floor(
    env: dict[str, str], threads: int, count: int, memory: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median CPU ms per hash and resident MiB after, of bare argon2id in each FLOOR_MODES."""
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in FLOOR_MODES}
    for round_ in range(rounds):
        order = FLOOR_MODES[round_ % 3 :] + FLOOR_MODES[: round_ % 3]
        for mode in order:
            child = {k: v for k, v in env.items() if k != MALLOC_VAR}
            if mode.endswith("+mmap"):
                child[MALLOC_VAR] = "131072"
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    ARGON2_FLOOR,
                    mode.split("+")[0],
                    str(threads),
                    str(count),
                    str(memory),
                ],
                env=child,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            runs[mode].append((float(out[0]), float(out[1])))
    return {
        mode: {
            "cpu_ms": sorted(r[0] for r in values)[len(values) // 2],
            "rss": sorted(r[1] for r in values)[len(values) // 2],
        }
        for mode, values in runs.items()
    }


def baseline(env: dict[str, str]) -> dict[str, float]:
    """The interpreter with the application imported and nothing served."""
    code = (
        "import authsvc.main, sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    figures = read_process(proc.pid)
    proc.stdin.close()
    proc.wait(10)
    return figures


def summarise(name: str, snap: dict[str, Any], root: int) -> dict[str, Any]:
    spawned = "multiprocessing.spawn"  # uvicorn's worker processes
    workers = [v for pid, v in snap.items() if int(pid) != root and spawned in v["cmd"]]
    others = [v for pid, v in snap.items() if int(pid) != root and spawned not in v["cmd"]]
    sup = snap[str(root)]
    if not workers:  # --workers 1: uvicorn serves in the command's own process
        workers, sup = [sup], {"cmd": "", "rss": 0.0, "pss": 0.0, "hwm": 0.0}
    return {
        "phase": name,
        "supervisor": sup,
        "workers": workers,
        "others": others,
        "total_rss": sum(v["rss"] for v in snap.values()),
        "total_pss": sum(v["pss"] for v in snap.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=os.environ.get("AUTHSVC_BENCH_DATABASE_URL"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hash-concurrency", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--logins", type=int, default=8)
    parser.add_argument("--bursts", type=int, default=2)
    parser.add_argument("--floor-hashes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.pg_url:
        raise SystemExit("give --pg-url (a throwaway PostgreSQL database)")

    with tempfile.TemporaryDirectory(prefix="authsvc-mem-") as scratch_name:
        scratch = Path(scratch_name)
        key = scratch / "signing.pem"
        key.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tmp = scratch / "tmp"
        tmp.mkdir()
        (scratch / "data").mkdir()
        memory_cost = 19456
        env = {
            "AUTHSVC_ENV": "production",
            "AUTHSVC_ISSUER": "https://auth.example.com",
            "AUTHSVC_DATABASE_URL": args.pg_url,
            "AUTHSVC_JWT_PRIVATE_KEY_FILE": str(key),
            "AUTHSVC_DATA_DIR": str(scratch / "data"),
            "AUTHSVC_PASSWORD_HASH_CONCURRENCY": str(args.hash_concurrency),
            "AUTHSVC_ARGON2_MEMORY_COST": str(memory_cost),
            "AUTHSVC_LOG_LEVEL": "warning",
            "AUTHSVC_LOG_FORMAT": "json",
            # Registration limits, where the service has them, must not cut the bench short.
            "AUTHSVC_REGISTER_MAX_PER_ADDRESS": "1000000",
            "TMPDIR": str(tmp),
        }
        base_env = {
            k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_") and k != MALLOC_VAR
        }
        base = baseline({**base_env, **env})
        server = Server(scratch, env, args.workers)
        root = server.process.pid
        phases = []
        try:
            time.sleep(2)
            phases.append(summarise("idle", snapshot(root), root))
            asyncio.run(warm(server.url))
            phases.append(summarise("warm", snapshot(root), root))
            bursts = []
            for n in range(1, args.bursts + 1):
                statuses, seconds = asyncio.run(burst(server.url, args.clients, args.logins))
                bursts.append({"statuses": statuses, "seconds": seconds})
                phases.append(summarise(f"burst{n}", snapshot(root), root))
            time.sleep(5)
            phases.append(summarise("settled", snapshot(root), root))
            tmp_bytes = tree_bytes(tmp)
        finally:
            server.stop()
        floor = argon2_floor(
            base_env, args.hash_concurrency, args.floor_hashes, memory_cost, args.rounds
        )

    argon2_mib = args.hash_concurrency * memory_cost / 1024
    print(
        f"authsvc serve --workers {args.workers}, AUTHSVC_PASSWORD_HASH_CONCURRENCY="
        f"{args.hash_concurrency}, argon2 m={memory_cost} KiB: per worker up to "
        f"{args.hash_concurrency} x {memory_cost / 1024:.0f} MiB = {argon2_mib:.0f} MiB of hashing"
    )
    for b in bursts:
        codes = ", ".join(f"{n} x {code}" for code, n in sorted(b["statuses"].items()))
        print(f"burst of {args.clients * args.logins} logins in {b['seconds']:.1f} s: {codes}")
    print(
        f"baseline (python + import authsvc.main): rss {base['rss']:.1f} MiB, "
        f"pss {base['pss']:.1f} MiB"
    )
    print(f"{'phase':8} {'process':10} {'rss':>7} {'pss':>7} {'hwm':>7}  (MiB)")
    for phase in phases:
        rows = [("supervisor", phase["supervisor"])]
        rows += [(f"worker{i + 1}", w) for i, w in enumerate(phase["workers"])]
        rows += [("tracker", o) for o in phase["others"]]  # multiprocessing's resource tracker
        for label, v in rows:
            print(f"{phase['phase']:8} {label:10} {v['rss']:7.1f} {v['pss']:7.1f} {v['hwm']:7.1f}")
        print(
            f"{phase['phase']:8} {'TOTAL':10} {phase['total_rss']:7.1f} {phase['total_pss']:7.1f}"
        )
    idle, last = phases[0], phases[-1]
    if idle["workers"]:
        grow = [b["hwm"] - a["rss"] for a, b in zip(idle["workers"], last["workers"], strict=False)]
        print(
            "worker peak (hwm) minus idle rss: "
            + ", ".join(f"{g:.1f}" for g in grow)
            + f" MiB (argon2 budget per worker: {argon2_mib:.0f} MiB); "
            f"worker idle rss / baseline rss: "
            + ", ".join(f"{w['rss'] / base['rss']:.2f}" for w in idle["workers"])
        )
    print(f"written under TMPDIR: {tmp_bytes / MIB:.1f} MiB")
    own = floor["own"]
    print(
        f"argon2id alone, {args.hash_concurrency} at a time, {args.floor_hashes} hashes, "
        f"median of {args.rounds} rounds:"
    )
    for mode, figures in floor.items():
        print(
            f"  {mode:9} {figures['cpu_ms']:6.1f} ms CPU per hash "
            f"({figures['cpu_ms'] / own['cpu_ms']:.2f} x own), "
            f"rss after {figures['rss']:6.1f} MiB"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items() if k != "pg_url"},
                    "baseline": base,
                    "phases": phases,
                    "bursts": bursts,
                    "tmp_bytes": tmp_bytes,
                    "argon2_floor": floor,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
