"""Dependencies and their ``Annotated`` aliases.

Every dependency is ``async def``, even those that never await: FastAPI runs a plain
``def`` dependency in the thread pool, a thread hand-off per dependency per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Cookie, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.api.bodies import parse_optional_body
from authsvc.api.context import AppContext
from authsvc.api.cookies import REFRESH_COOKIE, check_origin
from authsvc.api.proxies import is_trusted_proxy
from authsvc.config import Settings
from authsvc.db import request_session
from authsvc.schemas import RefreshRequest
from authsvc.services.auth import AuthService, ClientInfo
from authsvc.services.sessions import SessionService


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_settings_dep(ctx: ContextDep) -> Settings:
    return ctx.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_db(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    # Opens and closes; never commits (services own the transaction).
    async with request_session(ctx.sessionmaker) as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_db)]


async def get_auth_service(ctx: ContextDep, db: DbSession) -> AuthService:
    return auth_service(ctx, db)


def auth_service(ctx: AppContext, db: AsyncSession) -> AuthService:
    return AuthService(
        db,
        settings=ctx.settings,
        hasher=ctx.hasher,
        codec=ctx.codec,
        events=ctx.events,
        throttle=ctx.throttle,
    )


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


async def get_session_service(ctx: ContextDep, db: DbSession) -> SessionService:
    return SessionService(db, settings=ctx.settings, codec=ctx.codec, events=ctx.events)


SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]


async def get_now() -> datetime:
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(get_now)]


def client_address(request: Request, trusted_proxies: list[str]) -> str | None:
    """The client's address: the peer, or, behind trusted proxies, the first untrusted hop.

    ``X-Forwarded-For`` is read right to left and only while each hop is a trusted proxy,
    so a client cannot choose its own address by sending the header itself.
    """
    peer = request.client.host[:64] if request.client else None
    if peer is None or not trusted_proxies or not is_trusted_proxy(peer, trusted_proxies):
        return peer
    hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
    address = peer
    for hop in reversed([h for h in hops if h]):
        canonical = _canonical_ip(hop)
        if canonical is None:
            break
        address = canonical
        if not is_trusted_proxy(canonical, trusted_proxies):
            break
    return address


def _canonical_ip(text: str) -> str | None:
    """``text`` as a normalised IP address without an IPv6 zone, or ``None``.

    A zone (``fe80::1%eth0``) means nothing off the proxy's host, and it is free text of
    any length: kept, it would break the address column and split the throttle's counts.
    """
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return str(ip)


def client_info(request: Request, settings: Settings) -> ClientInfo:
    agent = request.headers.get("user-agent")
    return ClientInfo(
        ip_address=client_address(request, settings.operations.trusted_proxies),
        user_agent=agent.replace("\x00", "")[:512] if agent else None,
    )


async def get_client(request: Request, settings: SettingsDep) -> ClientInfo:
    return client_info(request, settings)


Client = Annotated[ClientInfo, Depends(get_client)]


@dataclass(frozen=True, slots=True)
class PresentedRefreshToken:
    """The refresh token a request presents, and whether it came by cookie."""

    token: str
    via_cookie: bool


async def get_presented_refresh_token(
    request: Request,
    settings: SettingsDep,
    cookie: Annotated[str | None, Cookie(alias=REFRESH_COOKIE, include_in_schema=False)] = None,
    origin: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> PresentedRefreshToken:
    """The token in the JSON body (read by api.bodies, as every body is), else the one in
    the refresh cookie; 422 when there is neither."""
    body = await parse_optional_body(request, RefreshRequest)
    if body is not None and body.refresh_token:
        return PresentedRefreshToken(body.refresh_token, via_cookie=False)
    if cookie:
        # A browser sends the cookie cross-site only if SameSite fails us; refuse foreign
        # origins outright, before anything is consumed.
        check_origin(origin, settings)
        return PresentedRefreshToken(cookie, via_cookie=True)
    # The message is api.messages' (it names the cookie).
    raise RequestValidationError(
        [{"type": "missing", "loc": ("body", "refresh_token"), "msg": "missing"}]
    )


PresentedRefresh = Annotated[PresentedRefreshToken, Depends(get_presented_refresh_token)]
