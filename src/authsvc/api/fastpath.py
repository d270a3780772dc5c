"""Hot routes answered without FastAPI's per-request machinery, when the request is plain.

``GET /me`` runs on every protected page load and a refresh every half hour of every
session. FastAPI solves each route's dependency graph and validates and serialises its
response model on every call; measured under load, that was a fifth or more of these
routes' CPU (docs/deployment.md, "Capacity"). A route made with ``fast_route(fast)`` first
asks ``fast(request)``, which answers the plain case or returns ``None``; the route then runs
as declared, so every other case keeps the exact status, body and headers it has always had.

- ``fast_me`` answers only a success: for no or odd credentials, an invalid token or a dead
  session it returns ``None`` and the declared route refuses.
- ``fast_refresh`` takes only a JSON body carrying the token, and ``fast_login`` only a JSON
  body with a username and a password (the password grant), each with no query string. Once
  the request is its own, each calls the same service as the declared route and answers
  whatever comes out, a refusal included (its exception goes to the app's error handlers, as
  the declared route's would): both change the database, so neither may run twice.

Neither runs when a test overrides a dependency (a fake clock): only the declared route
honours overrides. An exception that either raises (the database is down) goes to the app's
error handlers like one from the declared route.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from authsvc.api.bodies import is_json, media_type
from authsvc.api.context import AppContext
from authsvc.api.deps import auth_service, client_info
from authsvc.db import request_session
from authsvc.errors import InvalidToken, TokenExpired
from authsvc.schemas import LoginRequest, RefreshRequest, TokenPair, UserOut
from authsvc.services.auth import IssuedTokens, authenticate

Fast = Callable[[Request], Awaitable[Response | None]]


def fast_route(fast: Fast) -> type[APIRoute]:
    """An ``APIRoute`` class whose handler tries ``fast`` before the declared route."""

    class FastRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            declared = super().get_route_handler()

            async def handler(request: Request) -> Response:
                response = await fast(request)
                return response if response is not None else await declared(request)

            return handler

    return FastRoute


async def fast_me(request: Request) -> Response | None:
    """``GET /me`` with a valid bearer token of a live session: the user, as the declared
    route (``api.routes.users``) answers it."""
    if request.app.dependency_overrides:
        return None  # a test's clock or database: only the declared route honours it
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    ctx: AppContext = request.app.state.ctx
    try:
        claims = ctx.codec.decode_access_token(token)
        async with request_session(ctx.sessionmaker) as db:
            user = await authenticate(db, claims, datetime.now(UTC))
    except (InvalidToken, TokenExpired):
        return None
    return Response(UserOut.model_validate(user).model_dump_json(), media_type="application/json")


async def fast_refresh(request: Request) -> Response | None:
    """``POST /generateTokens`` (and ``/refresh``) with ``{"refresh_token": ...}`` as JSON and
    no query string: the rotation, as the declared route (``api.routes.auth``) answers it."""
    data = await _plain_json(request)
    if not isinstance(data, dict):
        return None
    try:
        body = RefreshRequest.model_validate(data)
    except ValidationError:
        return None
    if not body.refresh_token:
        return None  # the cookie's turn: the declared route reads it, and checks the origin
    ctx: AppContext = request.app.state.ctx
    async with request_session(ctx.sessionmaker) as db:
        tokens = await auth_service(ctx, db).refresh(
            refresh_token=body.refresh_token,
            client=client_info(request, ctx.settings),
            now=datetime.now(UTC),
        )
    return _token_pair(tokens)


async def fast_login(request: Request) -> Response | None:
    """``POST /login`` with ``{"username": ..., "password": ...}`` as JSON (the password
    grant) and no query string: the login, as the declared route (``api.routes.auth``)
    answers it."""
    data = await _plain_json(request)
    if not isinstance(data, dict) or data.get("grant_type", "password") != "password":
        return None  # a form, the refresh grant, or another grant: the declared route's
    try:
        body = LoginRequest.model_validate(data)
    except ValidationError:
        return None
    ctx: AppContext = request.app.state.ctx
    async with request_session(ctx.sessionmaker) as db:
        tokens = await auth_service(ctx, db).login(
            username=body.username,
            password=body.password,
            client=client_info(request, ctx.settings),
            now=datetime.now(UTC),
        )
    return _token_pair(tokens)


async def _plain_json(request: Request) -> object:
    """The JSON body of a request the fast way may take (no dependency overrides, no query
    string, a JSON content type), parsed as api.bodies parses every body; ``None`` when it
    may not, or the body does not parse."""
    if request.app.dependency_overrides or request.scope.get("query_string"):
        return None
    if not is_json(media_type(request)):
        return None
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _token_pair(tokens: IssuedTokens) -> Response:
    """The declared routes' answer (``token_response`` with JSON transport), byte for byte."""
    response = Response(
        TokenPair(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_in=tokens.expires_in,
            refresh_expires_in=tokens.refresh_expires_in,
        ).model_dump_json(exclude_none=True),
        media_type="application/json",
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
