"""Hot routes answered without FastAPI's per-request machinery, when the request is plain.

``GET /me`` runs on every protected page load. FastAPI solves its dependency graph and
validates and serialises its response model on every call; measured under load, that was a
fifth of the route's CPU (docs/deployment.md, "Capacity"). A route made with
``fast_route(fast)`` first asks ``fast(request)``: it answers only the plain success case and
returns ``None`` for everything else (no or odd credentials, an invalid token, a dead
session, a test that overrides a dependency), and then the route runs as declared, so every
refusal keeps the exact status, body and headers it has always had. ``fast`` must not change
anything before it decides; an exception it raises (the database is down) goes to the app's
error handlers like one from the declared route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from authsvc.api.context import AppContext
from authsvc.db import request_session
from authsvc.errors import InvalidToken, TokenExpired
from authsvc.schemas import UserOut
from authsvc.services.auth import authenticate

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
