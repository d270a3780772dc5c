"""Sessions users can see and end: logout, logout everywhere, the session list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Header, Response, status

from authsvc.api.deps import Client, ContextDep, DbSession, Now, SettingsDep
from authsvc.api.responses import BEARER_ERRORS, errors
from authsvc.api.routes.auth import COOKIE_SAMESITE, REFRESH_COOKIE, refresh_token_from
from authsvc.api.security import AccessClaimsDep, CurrentUser
from authsvc.errors import ErrorCode
from authsvc.schemas import RefreshRequest, SessionOut
from authsvc.services.sessions import SessionService

router = APIRouter(tags=["sessions"])


async def get_session_service(ctx: ContextDep, db: DbSession) -> SessionService:
    return SessionService(db, settings=ctx.settings, codec=ctx.codec, events=ctx.events)


SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]


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
    body: RefreshRequest | None = None,
    cookie: Annotated[str | None, Cookie(alias=REFRESH_COOKIE, include_in_schema=False)] = None,
    origin: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    token, _ = refresh_token_from(body, cookie, origin, settings)
    await service.logout(refresh_token=token, client=client, now=now)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        REFRESH_COOKIE,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite=COOKIE_SAMESITE,
    )
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
    sessions = await service.list_sessions(user_id=user.id, current_session=claims.sid, now=now)
    return [
        SessionOut(
            id=s.id,
            created_at=s.created_at,
            last_used_at=s.last_used_at,
            expires_at=s.expires_at,
            user_agent=s.user_agent,
            ip_address=s.ip_address,
            current=s.current,
        )
        for s in sessions
    ]


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
