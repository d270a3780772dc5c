"""The ``authsvc`` command."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc import database_target
from authsvc.config import Settings
from authsvc.db import make_engine, make_sessionmaker
from authsvc.errors import AuthError
from authsvc.security import argon2_memory, usernames
from authsvc.security.keys import (
    KeyConfigError,
    SigningKey,
    development_key_path,
    load_previous_keys,
    load_signing_key,
)


@click.group(
    help="authsvc: password login, JWT access tokens, rotating refresh tokens.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def app() -> None:
    pass


T = TypeVar("T")
# prometheus_client's switch for multiprocess mode (observability.metrics reads it too; not
# imported from there, as importing prometheus_client here would fix its mode too early).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SLOTS_DIR_ENV = "AUTHSVC_HASH_SLOTS_DIR"  # security.passwords.SLOTS_DIR_ENV


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"authsvc: error: {message}", file=sys.stderr)
    sys.exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        field = f"AUTHSVC_{where.upper()}: " if where else ""
        fail(f"invalid configuration: {field}{err['msg'].removeprefix('Value error, ')}")


def check_username(username: str) -> str:
    """``username`` normalised, or exit 2 if it breaks the rule the API applies too."""
    if not usernames.is_valid_username(username):
        fail(
            f"the username must be {usernames.MIN_LENGTH}-{usernames.MAX_LENGTH} ASCII letters,"
            " digits or . _ - @"
        )
    return usernames.normalize_username(username)


def require_database(settings: Settings, *, create: bool) -> bool:
    """Whether the database already existed. Without ``create``, a database that does not
    exist is refused in one line rather than created where the command happens to run."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        found = asyncio.run(database_target.exists(settings))
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot reach the database {database_target.describe(settings)}: {_reason(exc)}", 1)
    if not found and not (create and database_target.creatable(settings)):
        where = database_target.describe(settings)
        fail(f"no database at {where}: {database_target.how_to_create(settings)}", 1)
    return found


def _reason(exc: BaseException) -> str:
    """A database error's first line, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return text or type(orig).__name__


def run_db(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[T]], *, create: bool = False
) -> T:
    """Run ``work`` in a session on an up-to-date schema; a database error is one line.

    Only ``create`` makes a database that does not exist yet.
    """
    from sqlalchemy.exc import SQLAlchemyError

    if not create:
        require_database(settings, create=False)
    migrate_or_fail(settings)

    async def runner() -> T:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(runner())
    except (SQLAlchemyError, OSError) as exc:
        fail(f"database error on {database_target.describe(settings)}: {_reason(exc)}", 1)


def migrate_or_fail(settings: Settings) -> None:
    from authsvc.migrations import upgrade_to_head

    try:
        upgrade_to_head(settings)
    except Exception as exc:  # the one place a migration failure becomes a message
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        fail(
            f"migration failed: {type(exc).__name__}: {first_line}",
            1,
        )


@app.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to bind."
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes."
)
@click.option(
    "--ssl-certfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate (chain) to serve HTTPS with; needs --ssl-keyfile.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key (unencrypted) of --ssl-certfile.",
)
def serve(
    host: str, port: int, workers: int, ssl_certfile: Path | None, ssl_keyfile: Path | None
) -> None:
    """Bring the schema up to date, then serve (HTTPS with --ssl-certfile/--ssl-keyfile)."""
    import uvicorn

    tls = check_tls_files(ssl_certfile, ssl_keyfile)
    settings = load_settings()
    key_file = development_key_path(settings) if uses_development_key(settings) else None
    key_was_there = key_file is not None and key_file.exists()
    try:
        load_signing_key(settings)  # generate the development key once, before workers start
        load_previous_keys(settings)
    except KeyConfigError as exc:
        fail(str(exc))
    check_can_listen(host, port)
    new_database = database_target.creatable(settings) and not asyncio.run(
        database_target.exists(settings)
    )
    migrate_or_fail(settings)
    import logging.config

    from authsvc.observability.logs import logging_config

    # Say where everything is before uvicorn's own lines (JSON lines when not at a terminal).
    logging.config.dictConfig(
        logging_config(settings.operations.log_format, settings.operations.log_level)
    )
    log = logging.getLogger("authsvc.cli")
    log.info(
        "database %s: %s, schema up to date",
        "created" if new_database else "ready",
        database_target.describe(settings),
        extra={"fields": {"database": database_target.describe(settings)}},
    )
    if key_file is not None:
        log.info(
            "development signing key %s: %s (set AUTHSVC_JWT_PRIVATE_KEY_FILE in production)",
            "reused" if key_was_there else "generated",
            key_file.resolve(),
            extra={"fields": {"key_file": str(key_file.resolve())}},
        )
    scheme = "https" if tls else "http"
    shown_host = f"[{host}]" if ":" in host else host
    log.info(
        "docs page: %s://%s:%d/docs",
        scheme,
        "127.0.0.1" if host in ("0.0.0.0", "::") else shown_host,  # noqa: S104
        port,
    )

    options: dict[str, Any] = dict(
        app="authsvc.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        server_header=False,
        # uvicorn's httptools protocol with the request head bounded in size and time.
        http="authsvc.serving:BoundedHttpToolsProtocol",
        proxy_headers=False,  # X-Forwarded-For is judged by AUTHSVC_TRUSTED_PROXIES
        timeout_graceful_shutdown=20,
        # Our request middleware logs each request once, as structured data.
        access_log=False,
        log_config=logging_config(settings.operations.log_format, settings.operations.log_level),
        log_level=settings.operations.log_level,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    from authsvc.workers import reuse_port_available, run_workers

    with metrics_directory(workers), hashing_slots(workers):
        if workers > 1 and reuse_port_available():
            # A socket per worker, so connections spread over the workers (authsvc.workers).
            run_workers(uvicorn.Config(**options))
        else:
            uvicorn.run(**options)


def uses_development_key(settings: Settings) -> bool:
    """Whether the signing key is the one generated (once) under the data directory."""
    if settings.tokens.jwt_algorithm == "HS256":
        return settings.tokens.jwt_secret is None
    return settings.tokens.jwt_private_key_file is None and settings.operations.env != "production"


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # Called by OpenSSL only for an encrypted key: refuse rather than prompt.
    raise _EncryptedKey()


def check_tls_files(certfile: Path | None, keyfile: Path | None) -> tuple[Path, Path] | None:
    """The certificate and key to serve HTTPS with (absolute), checked to load together now,
    in one line, rather than in a traceback from every worker later."""
    import ssl

    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        fail("--ssl-certfile and --ssl-keyfile go together: give both, or neither")
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not path.is_file():
            fail(f"{option}: no such file: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except _EncryptedKey:
        fail(f"--ssl-keyfile {keyfile} is encrypted; give an unencrypted PEM key")
    except ssl.SSLError as exc:
        reason = (
            "the key does not match the certificate"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "they are not a PEM certificate and its PEM private key"
        )
        fail(f"cannot serve HTTPS with {certfile} and {keyfile}: {reason}")
    except OSError as exc:
        fail(f"cannot read {exc.filename or certfile}: {exc.strerror}")
    return certfile.resolve(), keyfile.resolve()


def check_can_listen(host: str, port: int) -> None:
    """Fail in one line now, rather than in uvicorn's traceback later, if the address is
    taken or unusable (a port left in TIME_WAIT is fine: SO_REUSEADDR, as uvicorn)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", 1)
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        fail(f"cannot listen on {host}:{port}: {reason}", 1)


@contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """Prometheus multiprocess mode for ``--workers N > 1``: each worker writes its samples
    to a shared directory that ``/metrics`` aggregates, so the totals cover every worker.

    Set before the workers start (prometheus_client picks its mode at import). A fresh
    temporary directory, removed on exit; an operator's own ``PROMETHEUS_MULTIPROC_DIR`` is
    used instead, emptied of a previous run's files as prometheus_client requires.
    """
    own = os.environ.get(MULTIPROC_ENV)
    if own:
        path = Path(own)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield
        return
    with _workers_directory(workers, MULTIPROC_ENV, "authsvc-metrics-"):
        yield


@contextmanager
def hashing_slots(workers: int) -> Iterator[None]:
    """For ``--workers N > 1``: a directory of hashing slots the workers share, so that they
    run no more argon2 hashes at once than there are cores (security.passwords.MachineSlots).
    On /dev/shm when it is a writable tmpfs: there the slots also share argon2's memory."""
    shm = Path("/dev/shm")  # noqa: S108 - a private directory is made inside it
    parent = shm if os.access(shm, os.W_OK) and argon2_memory.on_tmpfs(shm) else None
    with _workers_directory(workers, SLOTS_DIR_ENV, "authsvc-hashing-", parent):
        yield


@contextmanager
def _workers_directory(
    workers: int, variable: str, prefix: str, parent: Path | None = None
) -> Iterator[None]:
    """With ``workers > 1``: a fresh temporary directory named in ``variable`` for the
    workers (they inherit the environment), removed when the server stops."""
    if workers <= 1:
        yield
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.environ[variable] = str(path)
    try:
        yield
    finally:
        os.environ.pop(variable, None)
        shutil.rmtree(path, ignore_errors=True)


@app.command()
def migrate() -> None:
    """Bring the schema up to date (alembic upgrade head) and exit."""
    settings = load_settings()
    existed = require_database(settings, create=True)
    migrate_or_fail(settings)
    new = "" if existed else ", a new database"
    print(f"authsvc: schema is up to date: {database_target.describe(settings)}{new}")


@app.command("create-user")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user(username: str, password_stdin: bool) -> None:
    """Create a user (prompts for the password unless --password-stdin)."""
    from authsvc.main import build_hasher
    from authsvc.security.tokens import TokenCodec
    from authsvc.services.auth import AuthService

    settings = load_settings()
    username = check_username(username)
    password = read_password(password_stdin)
    # create_user signs nothing: a throwaway key, so that no development key is left behind
    # in whatever directory the command runs from.
    codec = TokenCodec(settings, throwaway_signing_key(settings))
    existed = require_database(settings, create=True)

    async def work(session: AsyncSession) -> str:
        service = AuthService(
            session, settings=settings, hasher=build_hasher(settings), codec=codec
        )
        user = await service.create_user(
            username=username, password=password, now=datetime.now(UTC)
        )
        return str(user.id)

    try:
        user_id = run_db(settings, work, create=True)
    except AuthError as exc:
        fail(exc.detail)
    new = "" if existed else ", a new database"
    print(f"created user {username} ({user_id}) in {database_target.describe(settings)}{new}")


def read_password(from_stdin: bool) -> str:
    """The password, from standard input or typed twice at a terminal (never echoed)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not _has_terminal():
        fail("no terminal to ask for the password on: pipe it in with --password-stdin")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            fail("the passwords do not match")
    if not password:
        fail("no password given")
    return password


def _has_terminal() -> bool:
    # getpass reads from /dev/tty, and falls back to stdin with a GetPassWarning without one.
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return os.name == "nt"


def throwaway_signing_key(settings: Settings) -> SigningKey:
    """An in-memory key of the configured algorithm, for code that needs a codec but never
    signs with it."""
    import secrets

    from authsvc.security.keys import generate_private_key

    if settings.tokens.jwt_algorithm == "HS256":
        return SigningKey.from_secret(secrets.token_bytes(48))
    return SigningKey.from_private_key(
        settings.tokens.jwt_algorithm, generate_private_key(settings.tokens.jwt_algorithm)
    )


def _set_disabled(username: str, disabled: bool) -> None:
    from authsvc.services.users import UnknownUser, UserAdminService

    settings = load_settings()
    username = check_username(username)

    async def work(session: AsyncSession) -> int:
        service = UserAdminService(session)
        if disabled:
            return await service.disable(username, datetime.now(UTC))
        await service.enable(username, datetime.now(UTC))
        return 0

    where = database_target.describe(settings)
    try:
        revoked = run_db(settings, work)
    except UnknownUser:
        fail(f"no such user: {username} (in {where})", 1)
    if disabled:
        print(f"disabled {username} in {where}; revoked {revoked} session(s)")
    else:
        print(f"enabled {username} in {where}")


@app.command("disable-user")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable an account and revoke all its sessions."""
    _set_disabled(username, True)


@app.command("enable-user")
@click.argument("username")
def enable_user(username: str) -> None:
    """Enable a disabled account."""
    _set_disabled(username, False)


@app.command()
def purge() -> None:
    """Delete sessions past their absolute cap (with their tokens), login and registration
    attempts no limit counts any more, and known addresses past their time."""
    from authsvc.services.purge import PurgeResult
    from authsvc.services.purge import purge as run_purge

    settings = load_settings()

    async def work(session: AsyncSession) -> PurgeResult:
        from sqlalchemy.ext.asyncio import AsyncEngine

        assert isinstance(session.bind, AsyncEngine)
        return await run_purge(make_sessionmaker(session.bind), settings, datetime.now(UTC))

    result = run_db(settings, work)
    print(
        f"purged {result.sessions} session(s), {result.attempts} attempt record(s)"
        f" and {result.known_addresses} known address(es) from {database_target.describe(settings)}"
    )


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime) -> datetime:
    """``1h``/``30m``/``7d``-style durations back from ``now``, or an ISO 8601 moment."""
    match = _RELATIVE.fullmatch(value.strip().lower())
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(
            "--since must be ISO 8601 (2026-01-31T12:00:00Z) "
            f"or a duration like 30m, 1h, 7d: {value!r}"
        )
    # A moment without an offset is read as UTC, like everything this service stores.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _field(value: object) -> str:
    return "-" if value is None else str(value)


@app.command()
@click.option("--user", "username", default=None, help="Only events of this username.")
@click.option(
    "--since", default=None, help="ISO 8601 moment, or a duration back from now (30m, 1h, 7d)."
)
@click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="At most this many (the newest).",
)
def audit(username: str | None, since: str | None, limit: int) -> None:
    """Print the audit trail of authentication events, oldest first."""
    from authsvc.services.audit import AuditQuery

    settings = load_settings()
    if username is not None:
        username = check_username(username)
    moment = parse_since(since, datetime.now(UTC)) if since is not None else None

    async def work(session: AsyncSession) -> list[str] | None:
        from authsvc.repositories.users import UserRepository

        if username is not None and await UserRepository(session).get_by_username(username) is None:
            return None
        lines = await AuditQuery(session).events(username=username, since=moment, limit=limit)
        return [
            "\t".join(
                [
                    line.event.occurred_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    line.event.event,
                    f"user={_field(line.username)}",
                    f"user_id={_field(line.event.user_id)}",
                    f"session={_field(line.event.session_id)}",
                    f"ip={_field(line.event.ip_address)}",
                    f"detail={_field(line.event.detail)}",
                ]
            )
            for line in lines
        ]

    where = database_target.describe(settings)
    found = run_db(settings, work)
    if found is None:
        fail(f"no such user: {username} (in {where})", 1)
    for text in found:
        click.echo(text)
    # On stderr, so that the trail on stdout stays one event per line.
    print(f"authsvc: {len(found)} event(s) from {where}", file=sys.stderr)


def main() -> None:
    try:
        app.main(prog_name="authsvc", standalone_mode=False)
    except click.exceptions.Abort:
        print("authsvc: aborted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        # Plain `authsvc`: show the usage, which is no error message.
        print(exc.format_message(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        print(f"authsvc: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
