"""Sessions users can see and end: logout, logout everywhere, the session list."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from authsvc.api.cookies import clear_refresh_cookie
from authsvc.api.deps import Client, Now, PresentedRefresh, SessionServiceDep, SettingsDep
from authsvc.api.responses import BEARER_ERRORS, errors
from authsvc.api.security import AccessClaimsDep, CurrentUser
from authsvc.errors import ErrorCode
from authsvc.schemas import SessionOut

router = APIRouter(tags=["sessions"])


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End the session of a refresh token (body or cookie) and clear the cookie",
    description="204 for any token, also one that is unknown, expired or already revoked "
    "(RFC 7009 §2.2).",
    responses=errors(
        (403, ErrorCode.ORIGIN_NOT_ALLOWED, "cookie request from an origin not allowed"),
        (422, ErrorCode.VALIDATION_ERROR, "no token in the body or the cookie"),
    ),
)
async def logout(
    service: SessionServiceDep,
    client: Client,
    settings: SettingsDep,
    now: Now,
    presented: PresentedRefresh,
) -> Response:
    await service.logout(refresh_token=presented.token, client=client, now=now)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_refresh_cookie(response, settings=settings)
    return response


@router.post(
    "/logout/all",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End every session of the authenticated user",
    responses=BEARER_ERRORS,
)
async def logout_all(
    user: CurrentUser, service: SessionServiceDep, client: Client, now: Now
) -> Response:
    await service.logout_all(user_id=user.id, client=client, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/sessions",
    response_model=list[SessionOut],
    summary="The authenticated user's active sessions",
    responses=BEARER_ERRORS,
)
async def list_sessions(
    user: CurrentUser, claims: AccessClaimsDep, service: SessionServiceDep, now: Now
) -> list[SessionOut]:
    return await service.list_sessions(user_id=user.id, current_session=claims.sid, now=now)


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End one of the authenticated user's sessions",
    responses={
        **BEARER_ERRORS,
        **errors((404, ErrorCode.SESSION_NOT_FOUND, "no session of the caller has this id")),
    },
)
async def end_session(
    session_id: str, user: CurrentUser, service: SessionServiceDep, client: Client, now: Now
) -> Response:
    await service.end_session(user_id=user.id, session_id=session_id, client=client, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
