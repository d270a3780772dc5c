"""Who is calling. The bearer dependency verifies the access token without the database; a
second, chained dependency loads the live user for routes that need one. Introspection
clients authenticate with HTTP Basic."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from authsvc.api.context import AppContext
from authsvc.api.deps import Now, SettingsDep
from authsvc.config import Settings
from authsvc.db import request_session
from authsvc.errors import InvalidClient, NotAuthenticated
from authsvc.models import User
from authsvc.security.tokens import AccessClaims
from authsvc.services.auth import authenticate

# auto_error=False: a missing or non-Bearer header is ours to report, in the contract's shape.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login", auto_error=False)


# The bearer check runs on every protected request: its dependencies are few (each one costs
# FastAPI's dependency solving more than the token's signature check) and it opens its own
# database session rather than taking one from ``DbSession``.


async def get_access_claims(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> AccessClaims:
    if not token or not token.strip():
        raise NotAuthenticated()
    ctx: AppContext = request.app.state.ctx
    return ctx.codec.decode_access_token(token.strip())


AccessClaimsDep = Annotated[AccessClaims, Depends(get_access_claims)]


async def get_current_user(request: Request, claims: AccessClaimsDep, now: Now) -> User:
    ctx: AppContext = request.app.state.ctx
    async with request_session(ctx.sessionmaker) as db:
        return await authenticate(db, claims, now)


CurrentUser = Annotated[User, Depends(get_current_user)]


def _digest(value: str) -> bytes:
    # Compare fixed-length digests, so the comparison's time says nothing about lengths either.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def authenticate_client(authorization: str | None, settings: Settings) -> str:
    """The introspection client named by HTTP Basic credentials; ``InvalidClient`` otherwise.

    Every configured client is compared, in constant time, whatever the outcome.
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise InvalidClient()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidClient() from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient()
    given_id, given_secret = _digest(client_id), _digest(secret)
    matched: str | None = None
    for entry in settings.clients.introspection_clients:
        known_id, sep, known_secret = entry.partition(":")
        id_ok = hmac.compare_digest(given_id, _digest(known_id))
        secret_ok = hmac.compare_digest(given_secret, _digest(known_secret))
        if sep and known_secret and id_ok and secret_ok:
            matched = known_id
    if matched is None:
        raise InvalidClient()
    return matched


async def get_introspection_client(request: Request, settings: SettingsDep) -> str:
    # The header is read from the request, not declared: the docs page documents the scheme
    # in the route's description, and a declared header would show as a plain parameter.
    return authenticate_client(request.headers.get("authorization"), settings)


IntrospectionClient = Annotated[str, Depends(get_introspection_client)]
