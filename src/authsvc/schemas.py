"""Request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from authsvc.security.usernames import Username


def _encodable(value: str) -> str:
    """Refuse lone surrogates, which JSON can carry but UTF-8 (and argon2) cannot."""
    value.encode("utf-8")
    return value


# Long enough for any policy, short enough that nobody makes us hash a megabyte. The policy
# (including the 128-character maximum) is applied by the service, with its own error code.
Password = Annotated[
    str,
    Field(min_length=1, max_length=1024, examples=["correct horse battery staple"]),
    AfterValidator(_encodable),
]
# No max_length: an over-long token is an invalid token (403/401), not a malformed body.
TokenString = Annotated[str, Field(min_length=1), AfterValidator(_encodable)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterRequest(_Body):
    username: Username
    password: Password


class LoginRequest(_Body):
    username: Username
    password: Password
    grant_type: Literal["password"] | None = None
    scope: Annotated[str, Field(max_length=1024)] = ""


class RefreshGrantRequest(_Body):
    """The token endpoint's refresh grant (RFC 6749 §6), sent by standard OAuth2 clients."""

    grant_type: Literal["refresh_token"]
    refresh_token: TokenString
    scope: Annotated[str, Field(max_length=1024)] = ""


class RefreshRequest(_Body):
    refresh_token: TokenString | None = None


class UserOut(BaseModel):
    # Validated from the ``User`` row's attributes (no docstring: it would show on /docs).
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    username: str
    created_at: datetime


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str | None = Field(
        default=None, description="Left out when the refresh token travels in the cookie."
    )
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_expires_in: int


class ErrorBody(BaseModel):
    error: str
    detail: str


class ValidationIssue(BaseModel):
    """One entry of FastAPI's validation error list (never with the offending input)."""

    model_config = ConfigDict(extra="allow")
    type: str
    loc: list[str | int]
    msg: str


class ValidationErrorBody(BaseModel):
    """A 422: ``validation_error`` with FastAPI's list, or a policy error with a sentence."""

    error: str
    detail: str | list[ValidationIssue]


class JWKS(BaseModel):
    keys: list[dict[str, object]]


class SessionOut(BaseModel):
    # Built by ``SessionService.list_sessions`` and returned as is.
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime = Field(
        description="When the session ends unless it is refreshed again "
        "(never past its absolute cap)."
    )
    user_agent: str | None
    ip_address: str | None
    current: bool = Field(
        description="Whether this is the session of the access token making the call."
    )


class IntrospectionOut(BaseModel):
    """RFC 7662: only ``active`` when the token is not live."""

    # The route leaves out the fields that are None: an inactive answer is {"active": false}.

    active: bool
    sub: str | None = None
    username: str | None = None
    exp: int | None = None
    iat: int | None = None
    iss: str | None = None
    aud: str | None = None
    jti: str | None = None
    sid: str | None = None
    token_type: Literal["access_token", "refresh_token"] | None = None


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata."""

    issuer: str
    jwks_uri: str
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
