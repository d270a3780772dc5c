"""The bearer dependency: verifies the access token without the database; a second,
chained dependency loads the live user for routes that need one."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from authsvc.api.deps import AuthServiceDep, ContextDep, Now
from authsvc.errors import NotAuthenticated
from authsvc.models import User
from authsvc.security.tokens import AccessClaims

# auto_error=False: a missing or non-Bearer header is ours to report, in the contract's shape.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login", auto_error=False)


async def get_access_claims(
    ctx: ContextDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> AccessClaims:
    if not token or not token.strip():
        raise NotAuthenticated()
    return ctx.codec.decode_access_token(token.strip())


AccessClaimsDep = Annotated[AccessClaims, Depends(get_access_claims)]


async def get_current_user(claims: AccessClaimsDep, service: AuthServiceDep, now: Now) -> User:
    return await service.authenticate(claims, now)


CurrentUser = Annotated[User, Depends(get_current_user)]
