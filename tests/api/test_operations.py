"""/healthz, /readyz, /metrics, request ids, structured logs, and 503 on database trouble."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from typing import Any

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from authsvc.main import create_app
from authsvc.observability.logs import JsonFormatter, TextFormatter, logging_config
from tests.conftest import ONLY_POSTGRESQL, ONLY_SQLITE, PASSWORD, ClientFactory, login, register
from tests.e2e.processes import free_port

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# -- health and readiness ---------------------------------------------------------------


async def test_healthz_answers_ok(client: AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_a_reachable_database(client: AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def unreachable_database_url() -> str:
    # Nothing listens on a port just found free: the connection is refused.
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/authsvc"


async def test_readyz_and_endpoints_answer_503_when_the_database_is_unreachable(
    make_client: ClientFactory,
) -> None:
    async with make_client() as up:
        await register(up, "opsuser")
        tokens = await login(up, "opsuser")
    # Same signing key, a database nobody answers for.
    async with make_client(database_url=unreachable_database_url()) as down:
        ready = await down.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "database": "unreachable"}
        assert (await down.get("/healthz")).status_code == 200  # liveness needs no database

        for path, body in (
            ("/login", {"username": "opsuser", "password": PASSWORD}),
            ("/register", {"username": "opsuser2", "password": PASSWORD}),
            ("/refresh", {"refresh_token": tokens["refresh_token"]}),
        ):
            response = await down.post(path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"] == "service_unavailable"
            assert int(response.headers["Retry-After"]) > 0
        me = await down.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 503
        assert me.json()["error"] == "service_unavailable"


@ONLY_SQLITE
async def test_locked_sqlite_database_gives_503_not_500(
    backend: str, database_url: str, make_client: ClientFactory
) -> None:
    async with make_client(db_statement_timeout_seconds=0.2) as client:
        await register(client, "lockeduser")
        tokens = await login(client, "lockeduser")
        path = make_url(database_url).database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            for route, body in (
                ("/login", {"username": "lockeduser", "password": PASSWORD}),
                ("/refresh", {"refresh_token": tokens["refresh_token"]}),
            ):
                response = await client.post(route, json=body)
                assert response.status_code == 503, (route, response.text)
                assert response.json()["error"] == "service_unavailable"
                assert "Retry-After" in response.headers
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The lock gone, the same token still rotates: nothing was consumed by the 503.
        response = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert response.status_code == 200, response.text


# -- metrics -----------------------------------------------------------------------------


async def test_metrics_count_logins_and_refreshes_by_outcome(client: AsyncClient) -> None:
    user = await register(client)
    first = await login(client, user["username"])
    wrong = await client.post("/login", json={"username": user["username"], "password": "x" * 12})
    assert wrong.status_code == 401
    rotated = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    reused = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.json()["error"] == "refresh_token_reused"
    revoked = await client.post("/refresh", json={"refresh_token": rotated.json()["refresh_token"]})
    assert revoked.json()["error"] == "refresh_token_revoked"
    invalid = await client.post("/refresh", json={"refresh_token": "not-a-token"})
    assert invalid.json()["error"] == "invalid_refresh_token"

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "authsvc_logins_total", outcome="success") == 1
    assert metric(text, "authsvc_logins_total", outcome="invalid_credentials") == 1
    for outcome, count in (("rotated", 1), ("reused", 1), ("revoked", 1), ("invalid", 1)):
        assert metric(text, "authsvc_refreshes_total", outcome=outcome) == count, outcome
    assert metric(text, "authsvc_refreshes_total", outcome="grace") == 0
    assert metric(text, "authsvc_sessions_revoked_total", reason="reuse_detected") == 1
    # Start-up hashes and verifies the dummy; register hashes; the two logins verify.
    assert metric(text, "authsvc_password_hash_seconds_count", operation="verify") == 3
    assert metric(text, "authsvc_password_hash_seconds_count", operation="hash") == 2
    # Per route template, with method and status.
    labels = {"handler": "/refresh", "method": "POST", "status": "403"}
    assert metric(text, "http_requests_total", **labels) == 3  # reused, revoked, invalid
    assert metric(text, "http_request_duration_seconds_count", handler="/login", method="POST") == 2


async def test_metrics_count_grace_retries(make_client: ClientFactory) -> None:
    async with make_client(refresh_reuse_grace_seconds=10) as client:
        user = await register(client)
        tokens = await login(client, user["username"])
        for _ in range(3):
            response = await client.post(
                "/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert response.status_code == 200
        text = (await client.get("/metrics")).text
    assert metric(text, "authsvc_refreshes_total", outcome="rotated") == 1
    assert metric(text, "authsvc_refreshes_total", outcome="grace") == 2


async def test_metrics_group_unknown_paths_under_one_handler(client: AsyncClient) -> None:
    for n in range(3):
        assert (await client.get(f"/no/such/path/{n}")).status_code == 404
    text = (await client.get("/metrics")).text
    assert metric(text, "http_requests_total", handler="none", method="GET", status="404") == 3
    assert "/no/such/path" not in text


# -- request ids -------------------------------------------------------------------------


async def test_request_id_is_echoed_when_safe(client: AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "edge-42.a:b_c"})
    assert response.headers["X-Request-ID"] == "edge-42.a:b_c"


@pytest.mark.parametrize("given", [None, "x" * 65, "has space", 'quote"d', "semi;colon", ""])
async def test_request_id_is_generated_when_missing_or_unsafe(
    client: AsyncClient, given: str | None
) -> None:
    headers = {"X-Request-ID": given} if given is not None else {}
    response = await client.get("/healthz", headers=headers)
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


async def test_every_response_carries_a_request_id(client: AsyncClient) -> None:
    responses = [
        await client.get("/nowhere"),
        await client.post("/login", json={}),
        await client.get("/me"),
        await client.post("/login", content=b"x" * (65 * 1024)),
        await client.delete("/healthz"),
    ]
    assert [r.status_code for r in responses] == [404, 422, 401, 413, 405]
    for response in responses:
        assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])
    ids = {r.headers["X-Request-ID"] for r in responses}
    assert len(ids) == len(responses)


async def test_an_unhandled_error_is_a_500_in_the_contract_shape(settings: Any) -> None:
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    async with LifespanManager(app) as manager:
        transport = ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert response.headers["X-Request-ID"] == "trace-1"


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(13, "Permission denied", "/etc/authsvc/key.pem"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_unrelated_oserror_or_timeout_is_a_500_not_a_database_outage(
    settings: Any, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the database's failures are 503: a file or a socket of the code's own that fails
    is a bug, answered 500 and not logged as "database unavailable"."""
    app = create_app(settings)

    async def read_a_file() -> None:
        raise error

    app.add_api_route("/file", read_a_file)
    caplog.set_level(logging.WARNING, logger="authsvc")
    async with LifespanManager(app) as manager:
        transport = ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/file")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "Retry-After" not in response.headers
    assert not [r for r in caplog.records if r.getMessage() == "database unavailable"]


# -- structured logs ---------------------------------------------------------------------


async def test_one_log_line_per_request_and_per_auth_event_and_no_secrets(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc")
    user = await register(client)
    response = await client.post(
        "/login",
        json={"username": user["username"], "password": PASSWORD},
        headers={"X-Request-ID": "login-1", "User-Agent": "pytest"},
        params={"transport": "json"},
    )
    tokens = response.json()
    await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})  # reuse
    await client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})

    access = [r for r in caplog.records if r.name == "authsvc.access"]
    assert [(r.fields["method"], r.fields["path"], r.fields["status"]) for r in access] == [  # type: ignore[attr-defined]
        ("POST", "/register", 201),
        ("POST", "/login", 200),
        ("POST", "/refresh", 200),
        ("POST", "/refresh", 403),
        ("GET", "/me", 401),
    ]
    login_line = access[1].fields  # type: ignore[attr-defined]
    assert login_line["request_id"] == "login-1"
    assert login_line["client"] == "203.0.113.7"
    assert isinstance(login_line["duration_ms"], float)
    assert "transport" not in login_line["path"]  # never the query string

    events = [r for r in caplog.records if r.name == "authsvc.events"]
    kinds = [r.fields["event"] for r in events]  # type: ignore[attr-defined]
    assert kinds == [
        "user_registered",
        "login_succeeded",
        "refresh_rotated",
        "refresh_reuse_detected",
    ]
    assert events[1].fields["request_id"] == "login-1"  # type: ignore[attr-defined]
    assert events[3].levelno == logging.WARNING

    # Rendered as the service writes them: JSON lines, with the request id, and never a
    # token, a password or a hash.
    formatter = JsonFormatter()
    rendered = [formatter.format(r) for r in caplog.records if r.name.startswith("authsvc")]
    parsed = [json.loads(line) for line in rendered]
    assert {p["request_id"] for p in parsed if p["logger"] == "authsvc.events"} >= {"login-1"}
    everything = "\n".join(rendered)
    for secret in (PASSWORD, tokens["access_token"], tokens["refresh_token"], "$argon2"):
        assert secret not in everything


def test_text_format_is_one_readable_line() -> None:
    record = logging.LogRecord("authsvc.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"method": "GET", "path": "/healthz", "status": 200}
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert "INFO" in line and "authsvc.access: request" in line
    assert "method=GET path=/healthz status=200" in line


@pytest.mark.parametrize(
    ("setting", "tty", "expected"),
    [
        ("json", True, "json"),
        ("text", False, "text"),
        ("auto", True, "text"),
        ("auto", False, "json"),
    ],
)
def test_log_format_follows_the_setting_or_the_terminal(
    monkeypatch: pytest.MonkeyPatch, setting: Any, tty: bool, expected: str
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: tty)
    config = logging_config(setting)
    assert config["handlers"]["default"]["formatter"] == expected
    # uvicorn's own access log stays silent: ours replaces it.
    assert config["loggers"]["uvicorn.access"]["handlers"] == []


@ONLY_POSTGRESQL
async def test_refresh_stuck_behind_a_lock_gives_503_and_consumes_nothing(
    backend: str, database_url: str, make_client: ClientFactory
) -> None:
    async with make_client(db_statement_timeout_seconds=0.5) as client:
        user = await register(client)
        tokens = await login(client, user["username"])
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                # Another transaction sits on every refresh-token row.
                await holder.execute("SELECT 1 FROM refresh_tokens FOR UPDATE")
                response = await client.post(
                    "/refresh", json={"refresh_token": tokens["refresh_token"]}
                )
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "service_unavailable"
                assert "Retry-After" in response.headers
        finally:
            await holder.close()
        # The statement was cancelled and rolled back: the token is still good, once.
        response = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert response.status_code == 200, response.text


def test_text_format_quotes_values_that_could_fake_a_line() -> None:
    record = logging.LogRecord("authsvc.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"path": "/x\n12:00:00.000 INFO    authsvc.access: forged", "status": 404}
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert 'path="/x\\n12:00:00.000 INFO    authsvc.access: forged" status=404' in line


async def test_logged_path_is_cut_short(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.access")
    response = await client.get("/" + "a" * 5000)
    assert response.status_code == 404
    (record,) = [r for r in caplog.records if r.name == "authsvc.access"]
    assert len(record.fields["path"]) == 512  # type: ignore[attr-defined]
