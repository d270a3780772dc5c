"""authsvc behind a real PgBouncer in transaction mode, with AUTHSVC_DB_PGBOUNCER=true.

Transaction pooling hands every transaction whichever server connection is free; with
asyncpg's statement caches on, concurrent traffic fails with prepared-statement errors
(docs/deployment.md has the measurement). This runs the real thing: migrate and serve
through PgBouncer, concurrent logins and refresh chains, nothing but 2xx.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PASSWORD, bearer, unique_username
from tests.e2e.conftest import POSTGRES_ONLY, ServerFactory

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAST_HASH_ENV = {
    "AUTHSVC_ARGON2_MEMORY_COST": "1024",
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def pgbouncer(postgres_url: str) -> Iterator[str]:
    """A PgBouncer (transaction pooling, 2 server connections) in front of the test DB."""
    if PGBOUNCER is None:
        if IN_CI:
            pytest.fail("CI=true but pgbouncer is not installed (.ci/run installs it)")
        pytest.skip("Debian's pgbouncer is not installed")
    url = make_url(postgres_url)
    port = _free_port()
    # Outside tmp_path, whose parents are private to root: PgBouncer runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="authsvc-pgbouncer-"))
    workdir.chmod(0o755)
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{url.database} = host={url.host or "127.0.0.1"} port={url.port or 5432} """
        f"""dbname={url.database} user={url.username or "postgres"}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
server_reset_query = DISCARD ALL
server_reset_query_always = 1
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""
    )
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    # PgBouncer refuses to run as root.
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    with (workdir / "pgbouncer.out").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (workdir / "pgbouncer.out").read_text(errors="replace")
                    pytest.fail(f"pgbouncer did not start: {output}")
                time.sleep(0.1)
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


async def _user_flow(client: httpx.AsyncClient, base: str) -> list[int]:
    name = unique_username("bouncer")
    statuses = [
        (
            await client.post(f"{base}/register", json={"username": name, "password": PASSWORD})
        ).status_code
    ]
    login = await client.post(f"{base}/login", json={"username": name, "password": PASSWORD})
    statuses.append(login.status_code)
    token = login.json().get("refresh_token", "")
    for _ in range(3):
        rotated = await client.post(f"{base}/refresh", json={"refresh_token": token})
        statuses.append(rotated.status_code)
        token = rotated.json().get("refresh_token", "")
    access = rotated.json().get("access_token", "")
    me = await client.get(f"{base}/me", headers=bearer(access))
    statuses.append(me.status_code)
    return statuses


@POSTGRES_ONLY
async def test_serves_through_pgbouncer_in_transaction_mode(
    pgbouncer: str, run_server: ServerFactory
) -> None:
    server = run_server(
        env={"AUTHSVC_DATABASE_URL": pgbouncer, "AUTHSVC_DB_PGBOUNCER": "true", **FAST_HASH_ENV},
        args=["--workers", "2"],
    )
    async with httpx.AsyncClient(timeout=30) as client:
        results = await asyncio.gather(*(_user_flow(client, server.url) for _ in range(16)))
    statuses = [s for flow in results for s in flow]
    assert statuses.count(201) == 16
    assert all(s in (200, 201) for s in statuses), statuses
    assert "Traceback" not in server.output()
