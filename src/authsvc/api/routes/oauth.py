"""What other services use: revocation (RFC 7009), introspection (RFC 7662) and the
authorization server metadata (RFC 8414)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from authsvc.api.bodies import MalformedBody, read_json_or_form
from authsvc.api.deps import Client, Now, SessionServiceDep, SettingsDep
from authsvc.api.responses import errors
from authsvc.api.security import IntrospectionClient
from authsvc.errors import ErrorCode, InvalidRequest
from authsvc.schemas import IntrospectionOut, ServerMetadata

router = APIRouter(tags=["oauth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_TOKEN_PARAMS = {
    "type": "object",
    "required": ["token"],
    "properties": {
        "token": {"type": "string", "minLength": 1},
        "token_type_hint": {
            "description": "`refresh_token` or `access_token`; anything else is ignored (RFC 7009)"
        },
    },
}
_TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _TOKEN_PARAMS},
            "application/json": {"schema": _TOKEN_PARAMS},
        },
    }
}


async def _token_params(request: Request) -> tuple[str, str | None]:
    """``token`` and ``token_type_hint`` from a form or JSON; 400 ``invalid_request`` otherwise."""
    try:
        data = await read_json_or_form(request, empty={})
    except MalformedBody as exc:
        raise InvalidRequest(str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a form or a JSON object.")
    token, hint = data.get("token"), data.get("token_type_hint")
    if not isinstance(token, str) or not token:
        raise InvalidRequest("The `token` parameter is required.")
    return token, hint if isinstance(hint, str) else None


@router.post(
    "/revoke",
    status_code=status.HTTP_200_OK,
    response_class=Response,
    summary="Revoke a token (RFC 7009): a refresh or access token ends its session",
    description="200 with an empty body for any token, also one that is unknown, expired or "
    "already revoked. `token_type_hint` (`refresh_token` or `access_token`) only sets which "
    "kind is tried first.",
    openapi_extra=_TOKEN_BODY,
    responses={
        200: {"description": "Revoked, or there was nothing to revoke."},
        **errors(
            (400, ErrorCode.INVALID_REQUEST, "no `token` parameter"),
        ),
    },
)
async def revoke(
    request: Request, service: SessionServiceDep, client: Client, now: Now
) -> Response:
    token, hint = await _token_params(request)
    await service.revoke_token(token=token, hint=hint, client=client, now=now)
    return Response(status_code=status.HTTP_200_OK, headers=NO_STORE)


@router.post(
    "/introspect",
    response_model=IntrospectionOut,
    response_model_exclude_none=True,
    summary="Introspect a token (RFC 7662); HTTP Basic as an introspection client",
    description='`{"active": false}` and nothing else for any token that is not a live access '
    "or refresh token of an active session.",
    openapi_extra=_TOKEN_BODY,
    responses=errors(
        (401, ErrorCode.INVALID_CLIENT, "missing or wrong HTTP Basic client credentials"),
        (400, ErrorCode.INVALID_REQUEST, "no `token` parameter"),
    ),
)
async def introspect(
    request: Request,
    response: Response,
    _client: IntrospectionClient,
    service: SessionServiceDep,
    now: Now,
) -> IntrospectionOut:
    token, _hint = await _token_params(request)
    response.headers.update(NO_STORE)
    return await service.introspect(token=token, now=now)


@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=ServerMetadata,
    summary="Authorization server metadata (RFC 8414)",
    tags=["discovery"],
)
async def metadata(request: Request, settings: SettingsDep) -> ServerMetadata:
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return ServerMetadata(
        issuer=settings.issuer,
        jwks_uri=f"{base}/.well-known/jwks.json",
        token_endpoint=f"{base}/login",
        revocation_endpoint=f"{base}/revoke",
        introspection_endpoint=f"{base}/introspect",
        # The token endpoint (/login) takes both; its refresh grant rotates as /refresh does.
        grant_types_supported=["password", "refresh_token"],
        token_endpoint_auth_methods_supported=["none"],
        revocation_endpoint_auth_methods_supported=["none"],
        introspection_endpoint_auth_methods_supported=["client_secret_basic"],
    )
