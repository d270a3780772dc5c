"""Register, login and refresh."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError

from authsvc.api.bodies import json_body, json_or_form_body, parse_body, read_body, validate_body
from authsvc.api.cookies import check_origin, set_refresh_cookie
from authsvc.api.deps import AuthServiceDep, Client, Now, PresentedRefresh, SettingsDep
from authsvc.api.fastpath import fast_login, fast_refresh, fast_route
from authsvc.api.responses import errors
from authsvc.config import Settings
from authsvc.errors import (
    ErrorCode,
    InvalidGrant,
    InvalidRequest,
    RefreshTokenRefused,
    UnsupportedGrantType,
)
from authsvc.schemas import (
    REFRESH_BODY_SCHEMA,
    LoginRequest,
    RefreshGrantRequest,
    RegisterRequest,
    TokenPair,
    UserOut,
)
from authsvc.services.auth import IssuedTokens

router = APIRouter(tags=["tokens"])

Transport = Annotated[
    Literal["json", "cookie"],
    Query(description="`cookie`: the refresh token travels only in an HttpOnly cookie."),
]


def token_response(
    response: Response, tokens: IssuedTokens, *, transport: str, settings: Settings
) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    refresh: str | None = tokens.refresh_token
    if transport == "cookie":
        set_refresh_cookie(
            response, tokens.refresh_token, max_age=tokens.refresh_expires_in, settings=settings
        )
        refresh = None
    return TokenPair(
        access_token=tokens.access_token,
        refresh_token=refresh,
        expires_in=tokens.expires_in,
        refresh_expires_in=tokens.refresh_expires_in,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create a user",
    responses=errors(
        (409, ErrorCode.USERNAME_TAKEN, "the username is registered already"),
        (403, ErrorCode.REGISTRATION_DISABLED, "registration is closed"),
        (
            422,
            ErrorCode.WEAK_PASSWORD,
            "the password breaks the policy (the detail names the rule)",
        ),
        (422, ErrorCode.VALIDATION_ERROR, "malformed body"),
        (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "a body that is not JSON"),
        (429, ErrorCode.TOO_MANY_ATTEMPTS, "too many registrations from this address"),
        (503, ErrorCode.SERVICE_UNAVAILABLE, "too many password checks waiting; see Retry-After"),
    ),
    openapi_extra=json_body(RegisterRequest),
)
async def register(request: Request, service: AuthServiceDep, client: Client, now: Now) -> UserOut:
    body = await parse_body(request, RegisterRequest)
    user = await service.register(
        username=body.username, password=body.password, client=client, now=now
    )
    return UserOut.model_validate(user)


async def login(
    request: Request,
    response: Response,
    service: AuthServiceDep,
    client: Client,
    settings: SettingsDep,
    now: Now,
    transport: Transport = "json",
    origin: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TokenPair:
    if transport == "cookie":
        # Login CSRF: a foreign page must not plant its own session in the browser.
        check_origin(origin, settings)
    grant = token_request(await read_body(request, form=True))
    if isinstance(grant, RefreshGrantRequest):
        try:
            tokens = await service.refresh(
                refresh_token=grant.refresh_token, client=client, now=now
            )
        except RefreshTokenRefused as exc:
            # RFC 6749 §5.2 names every refusal of the grant invalid_grant; the detail says
            # which (and a reused token has revoked its session all the same).
            raise InvalidGrant(exc.detail) from None
    else:
        tokens = await service.login(
            username=grant.username, password=grant.password, client=client, now=now
        )
    return token_response(response, tokens, transport=transport, settings=settings)


# A JSON body with a username and a password, the common case, skips FastAPI's dependency
# solving (api.fastpath); every other request runs the route as declared.
router.add_api_route(
    "/login",
    login,
    methods=["POST"],
    response_model=TokenPair,
    response_model_exclude_none=True,
    summary="Log in with a password, or refresh (the OAuth2 token endpoint)",
    description="The OAuth2 token endpoint. Password grant: JSON `{username, password}` or "
    "the form (`grant_type=password` optional) starts a session. Refresh grant (RFC 6749 §6): "
    "the form `grant_type=refresh_token&refresh_token=…` rotates the token exactly as "
    "`/generateTokens` does, with RFC 6749 §5.2 errors (400 `invalid_grant`).",
    openapi_extra=json_or_form_body(LoginRequest, RefreshGrantRequest),
    responses=errors(
        (401, ErrorCode.INVALID_CREDENTIALS, "unknown user or wrong password"),
        (403, ErrorCode.ACCOUNT_DISABLED, "the account is disabled"),
        (403, ErrorCode.ORIGIN_NOT_ALLOWED, "cookie transport from an origin not allowed"),
        (429, ErrorCode.TOO_MANY_ATTEMPTS, "too many failed logins; see Retry-After"),
        (
            400,
            ErrorCode.INVALID_GRANT,
            "refresh grant: the refresh token is unknown, forged, expired, revoked or reused "
            "(reuse revokes its session)",
        ),
        (400, ErrorCode.UNSUPPORTED_GRANT_TYPE, "a grant_type other than the two above"),
        (400, ErrorCode.INVALID_REQUEST, "refresh grant without a `refresh_token`"),
        (
            503,
            ErrorCode.SERVICE_UNAVAILABLE,
            "too many password checks waiting, or the database or the throttle's Redis is"
            " unreachable; see Retry-After",
        ),
        (422, ErrorCode.VALIDATION_ERROR, "malformed body"),
        (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "a body that is neither JSON nor a form"),
    ),
    route_class_override=fast_route(fast_login),
)


def token_request(data: object) -> LoginRequest | RefreshGrantRequest:
    """The grant a token-endpoint body asks for, by its ``grant_type`` (RFC 6749 §4.3, §6)."""
    grant_type = data.get("grant_type") if isinstance(data, dict) else None
    if grant_type == "refresh_token":
        try:
            return RefreshGrantRequest.model_validate(data)
        except ValidationError:
            raise InvalidRequest(
                "The refresh grant needs a `refresh_token` parameter: a non-empty string."
            ) from None
    if grant_type not in (None, "password"):
        raise UnsupportedGrantType()
    return validate_body(data, LoginRequest)


REFRESH_RESPONSES = errors(
    (403, ErrorCode.REFRESH_TOKEN_EXPIRED, "the token or its session expired"),
    (403, ErrorCode.REFRESH_TOKEN_REUSED, "an already-rotated token: the session is now revoked"),
    (403, ErrorCode.REFRESH_TOKEN_REVOKED, "the session was logged out or revoked"),
    (403, ErrorCode.INVALID_REFRESH_TOKEN, "malformed, forged, of the wrong type or unknown"),
    (403, ErrorCode.ORIGIN_NOT_ALLOWED, "cookie request from an origin not allowed"),
    (422, ErrorCode.VALIDATION_ERROR, "no token in the body or the cookie"),
    (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "a body that is not JSON"),
)
REFRESH_DESCRIPTION = (
    "The refresh token in the JSON body, or, with no body, in the `authsvc_refresh` cookie "
    "(see `transport=cookie`); a refresh that came by cookie answers by cookie."
)


async def refresh(
    response: Response,
    service: AuthServiceDep,
    client: Client,
    settings: SettingsDep,
    now: Now,
    presented: PresentedRefresh,
    transport: Transport = "json",
) -> TokenPair:
    tokens = await service.refresh(refresh_token=presented.token, client=client, now=now)
    return token_response(
        response,
        tokens,
        transport="cookie" if presented.via_cookie else transport,
        settings=settings,
    )


# A JSON body with the token, the common case, skips FastAPI's dependency solving
# (api.fastpath); every other request runs the route as declared.
for _path, _summary in (
    ("/refresh", "Rotate a refresh token (alias of /generateTokens)"),
    ("/generateTokens", "Rotate a refresh token for a new token pair"),
):
    router.add_api_route(
        _path,
        refresh,
        methods=["POST"],
        response_model=TokenPair,
        response_model_exclude_none=True,
        summary=_summary,
        description=REFRESH_DESCRIPTION,
        responses=REFRESH_RESPONSES,
        openapi_extra=json_body(REFRESH_BODY_SCHEMA),
        route_class_override=fast_route(fast_refresh),
    )
