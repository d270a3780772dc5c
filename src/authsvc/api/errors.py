"""Every exception -> HTTP response translation, in one place."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from authsvc.api.messages import humanize
from authsvc.db import error_chain
from authsvc.errors import AuthError, ErrorCode, ServiceUnavailable, TooManyAttempts

logger = logging.getLogger("authsvc.errors")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.USERNAME_TAKEN: 409,
    ErrorCode.REGISTRATION_DISABLED: 403,
    ErrorCode.WEAK_PASSWORD: 422,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.ACCOUNT_DISABLED: 403,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    ErrorCode.REFRESH_TOKEN_EXPIRED: 403,
    ErrorCode.REFRESH_TOKEN_REUSED: 403,
    ErrorCode.REFRESH_TOKEN_REVOKED: 403,
    ErrorCode.INVALID_REFRESH_TOKEN: 403,
    ErrorCode.ORIGIN_NOT_ALLOWED: 403,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_CLIENT: 401,
    ErrorCode.INVALID_GRANT: 400,
    ErrorCode.UNSUPPORTED_GRANT_TYPE: 400,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
}

REALM = 'Bearer realm="authsvc"'
WWW_AUTHENTICATE: dict[ErrorCode, str] = {
    ErrorCode.NOT_AUTHENTICATED: REALM,
    ErrorCode.INVALID_CREDENTIALS: REALM,
    ErrorCode.TOKEN_EXPIRED: (
        f'{REALM}, error="invalid_token", error_description="The access token expired"'
    ),
    ErrorCode.INVALID_TOKEN: f'{REALM}, error="invalid_token"',
    ErrorCode.INVALID_CLIENT: 'Basic realm="authsvc"',
}
_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def error_response(
    code: ErrorCode | str, detail: Any, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": str(code), "detail": detail}, status_code=status, headers=headers)


def auth_error_response(exc: AuthError) -> JSONResponse:
    headers: dict[str, str] = {}
    if exc.code in WWW_AUTHENTICATE:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE[exc.code]
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return error_response(exc.code, exc.detail, STATUS[exc.code], headers)


def _safe_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's error list with our sentences (api.messages), without ``input`` (it may hold
    a password), ``url`` or ``ctx`` (a pattern, a parser position)."""
    encoded: list[dict[str, Any]] = jsonable_encoder(humanize(errors))
    return encoded


async def _on_auth_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    return auth_error_response(exc)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(ErrorCode.VALIDATION_ERROR, _safe_validation_errors(exc.errors()), 422)


_UNPARSABLE_BODY_ERRORS = [
    {"type": "json_invalid", "loc": ["body"], "msg": "The body is not valid JSON."}
]


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI raises a 400 from the decoding error of a body it cannot even decode (JSON
    # that is not UTF-8); the contract calls every malformed body a 422 ``validation_error``.
    if exc.status_code == 400 and exc.__cause__ is not None:
        return error_response(ErrorCode.VALIDATION_ERROR, _UNPARSABLE_BODY_ERRORS, 422)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(code, str(exc.detail), exc.status_code, dict(exc.headers or {}))


async def _on_database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # Connection refused or lost, pool exhausted, timeouts, a server shutting down or full:
    # the database, not the request. Any other database error is a bug and stays a 500.
    if not is_database_unavailable(exc):
        raise exc
    logger.warning("database unavailable", extra={"fields": {"error": _describe(exc)}})
    return auth_error_response(ServiceUnavailable())


# SQLSTATEs that mean "the database cannot serve now", not "this statement is wrong":
# 08 connection exception, 53 insufficient resources (53300 too many connections),
# 57014 query canceled (statement_timeout), 57P01-57P05 admin/crash shutdown, cannot
# connect now, idle session timeout, 25P03 idle-in-transaction timeout, 40P01 deadlock.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53")
_UNAVAILABLE_SQLSTATES = frozenset(
    {"57014", "57P01", "57P02", "57P03", "57P04", "57P05", "25P03", "40P01", "55P03"}
)
# SQLite reports contention and I/O trouble only in the message.
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open database",
)
# asyncpg's client-side errors on a connection that died or timed out under it.
_ASYNCPG_UNAVAILABLE = (
    "connection is closed",
    "connection was closed",
    "another operation is in progress",
)
_ASYNCPG_UNAVAILABLE_TYPES = frozenset(
    {"ConnectionDoesNotExistError", "CannotConnectNowError", "TooManyConnectionsError"}
)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, a database or pool error, means the database is down, unreachable,
    overloaded or hung. Nothing else is: an ``OSError`` of the code's own is a bug."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        # The connection failed under the driver: refused, reset, or timed out (asyncpg's
        # connect and command_timeout). db.install_error_translation wraps these.
        if exc.connection_invalidated or isinstance(exc.orig, OSError | TimeoutError):
            return True
    elif not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return False
    for item in error_chain(exc):
        sqlstate = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
        ):
            return True
        name, message = type(item).__name__, str(item).lower()
        if name in _ASYNCPG_UNAVAILABLE_TYPES:
            return True
        if name == "OperationalError" and any(m in message for m in _SQLITE_UNAVAILABLE):
            return True
        if "InterfaceError" in name and any(m in message for m in _ASYNCPG_UNAVAILABLE):
            return True
    return False


def _describe(exc: BaseException) -> str:
    # Class names and the SQLSTATE only: a message may quote SQL (never parameters, see
    # hide_parameters), and the names say enough to an operator.
    orig = getattr(exc, "orig", None)
    name = type(exc).__name__
    described = f"{name}({type(orig).__name__})" if orig is not None else name
    for item in error_chain(exc):
        sqlstate = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(sqlstate, str):
            return f"{described} sqlstate={sqlstate}"
    return described


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AuthError, _on_auth_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(DBAPIError, _on_database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _on_database_unavailable)
    # Raw asyncpg errors, should one escape SQLAlchemy's wrapping (e.g. during connect).
    app.add_exception_handler(asyncpg.PostgresError, _on_database_unavailable)
    app.add_exception_handler(asyncpg.InterfaceError, _on_database_unavailable)
