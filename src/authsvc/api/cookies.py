"""The refresh cookie of the browser transport: its name and flags, writing and clearing it,
and the origin check that keeps a foreign page from using it."""

from __future__ import annotations

from typing import Literal, cast

from fastapi import Response

from authsvc.config import Settings
from authsvc.errors import OriginNotAllowed

REFRESH_COOKIE = "authsvc_refresh"
# Spelled `Strict`, as the README's cookie transport documents it (Starlette passes the value
# through as given).
COOKIE_SAMESITE = cast(Literal["strict"], "Strict")


def set_refresh_cookie(response: Response, token: str, *, max_age: int, settings: Settings) -> None:
    """Send the refresh token in the HttpOnly cookie, for ``max_age`` seconds."""
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=max_age,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite=COOKIE_SAMESITE,
    )


def clear_refresh_cookie(response: Response, *, settings: Settings) -> None:
    """Tell the browser to drop the refresh cookie (same path and flags as it was set with)."""
    response.delete_cookie(
        REFRESH_COOKIE,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite=COOKIE_SAMESITE,
    )


def check_origin(origin: str | None, settings: Settings) -> None:
    """``OriginNotAllowed`` for a browser request from an origin not in the CORS list."""
    if origin is not None and origin.rstrip("/") not in settings.cors_origins:
        raise OriginNotAllowed()
