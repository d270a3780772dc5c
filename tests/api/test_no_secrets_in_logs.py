"""No token, password or hash reaches a log record, whatever logger and level is enabled."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.models import RefreshToken, User
from tests.conftest import ClientFactory, bearer, unique_username

PASSWORD = "Secret-Sauce-7391-xyzzy"
WRONG_PASSWORD = "Wrong-Guess-5127-plugh"
WEAK_PASSWORD = "Sh0rt-Pw"
COMMON_PASSWORD = "qwertyuiop123"


class CaptureAll(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at DEBUG, also those that do not propagate."""
    handler = CaptureAll()
    manager = logging.root.manager
    loggers = [logging.root] + [
        lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
        if lg is logging.root or not lg.propagate:
            lg.addHandler(handler)
    manager._clear_cache()  # type: ignore[attr-defined]
    try:
        yield handler.records
    finally:
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled
            lg.removeHandler(handler)
        manager._clear_cache()  # type: ignore[attr-defined]


def rendered(record: logging.LogRecord) -> str:
    """All a formatter or a JSON log shipper could print of ``record``."""
    parts = [record.getMessage(), repr(record.args), repr(record.__dict__)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


async def test_full_flow_logs_no_secret(
    make_client: ClientFactory, clean_db: AsyncEngine, captured: list[logging.LogRecord]
) -> None:
    secrets: list[str] = [PASSWORD, WRONG_PASSWORD, WEAK_PASSWORD, COMMON_PASSWORD]
    async with make_client(login_max_attempts=2) as client:
        username = unique_username("logs")
        for password in (WEAK_PASSWORD, COMMON_PASSWORD):
            weak = await client.post("/register", json={"username": username, "password": password})
            assert weak.json()["error"] == "weak_password"
        assert (
            await client.post("/register", json={"username": username, "password": PASSWORD})
        ).status_code == 201
        login = await client.post("/login", json={"username": username, "password": PASSWORD})
        first = login.json()
        secrets += [first["access_token"], first["refresh_token"]]
        me = await client.get("/me", headers=bearer(first["access_token"]))
        assert me.status_code == 200
        rotated = await client.post(
            "/generateTokens", json={"refresh_token": first["refresh_token"]}
        )
        second = rotated.json()
        secrets += [second["access_token"], second["refresh_token"]]
        reused = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
        assert reused.json()["error"] == "refresh_token_reused"
        revoked = await client.post("/refresh", json={"refresh_token": second["refresh_token"]})
        assert revoked.json()["error"] == "refresh_token_revoked"
        cookie_login = await client.post(
            "/login",
            params={"transport": "cookie"},
            data={"username": username, "password": PASSWORD},
        )
        cookie = cookie_login.cookies["authsvc_refresh"]
        secrets += [cookie_login.json()["access_token"], cookie]
        client.cookies.clear()
        by_cookie = await client.post(
            "/generateTokens", headers={"Cookie": f"authsvc_refresh={cookie}"}
        )
        assert by_cookie.status_code == 200
        secrets += [by_cookie.json()["access_token"], by_cookie.cookies["authsvc_refresh"]]
        client.cookies.clear()
        # Logout, where this build has it (204), else 404.
        assert (
            await client.post("/logout", json={"refresh_token": second["refresh_token"]})
        ).status_code in (204, 404)
        client.cookies.clear()
        # Errors: forged and garbage tokens, wrong passwords until throttled, unknown users.
        forged = first["access_token"][:-4] + "AAAA"
        secrets.append(forged)
        assert (await client.get("/me", headers=bearer(forged))).status_code == 401
        assert (
            await client.post("/refresh", json={"refresh_token": first["refresh_token"] + "x"})
        ).status_code == 403
        for _ in range(3):
            await client.post("/login", json={"username": username, "password": WRONG_PASSWORD})
        await client.post(
            "/login", json={"username": unique_username(), "password": WRONG_PASSWORD}
        )
        throttled = await client.post("/login", json={"username": username, "password": PASSWORD})
        assert throttled.status_code == 429
        bad_body = await client.post(
            "/login",
            content=f'{{"username": 5, "password": "{WRONG_PASSWORD}"'.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert bad_body.status_code == 422
        assert WRONG_PASSWORD not in bad_body.text

    async with clean_db.connect() as conn:
        secrets += list((await conn.execute(select(User.password_hash))).scalars())
        secrets += list((await conn.execute(select(RefreshToken.token_hash))).scalars())
    # Token signatures on their own, in case something logs a part of a token.
    secrets += [s.rsplit(".", 1)[1] for s in list(secrets) if s.count(".") == 2]

    assert len(captured) > 0, "nothing was logged: the capture is broken"
    leaks: list[dict[str, Any]] = []
    for record in captured:
        text = rendered(record)
        for secret in secrets:
            if secret and secret in text:
                leaks.append(
                    {"logger": record.name, "level": record.levelname, "secret": secret[:6] + "…"}
                )
    assert leaks == []
