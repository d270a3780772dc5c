"""Sessions users see and end, and what other services ask about tokens: logout, the
session list, revocation (RFC 7009) and introspection (RFC 7662).

Revocation is idempotent and quiet: a token that is unknown, forged, expired or already
revoked changes nothing and raises nothing (RFC 7009 §2.2), so the answer never tells a
caller whether a token was genuine.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidRefreshToken, InvalidToken, SessionNotFound, TokenExpired
from authsvc.repositories.sessions import SessionRepository, TokenState
from authsvc.repositories.users import UserRepository
from authsvc.schemas import IntrospectionOut, SessionOut
from authsvc.security.tokens import AccessClaims, RefreshClaims, TokenCodec, token_hash
from authsvc.services.auth import ClientInfo
from authsvc.services.events import AuthEvent, EventSink, EventType, Reason
from authsvc.services.uow import UnitOfWork

TokenTypeHint = Literal["refresh_token", "access_token"]


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None


class SessionService:
    def __init__(
        self,
        db: AsyncSession,
        *,
        settings: Settings,
        codec: TokenCodec,
        events: EventSink | None = None,
    ) -> None:
        self._uow = UnitOfWork(db, events)
        self._settings = settings
        self._codec = codec
        self._sessions = SessionRepository(db)
        self._users = UserRepository(db)

    # -- for users -----------------------------------------------------------------------

    async def logout(self, *, refresh_token: str, client: ClientInfo, now: datetime) -> None:
        """Revoke the session of a refresh token; a no-op for any token that is not ours."""
        async with self._uow.write():
            state = await self._refresh_token_state(refresh_token)
            if state is not None:
                await self._revoke(
                    state.session_id, state.user_id, "logout", EventType.LOGOUT, client, now
                )

    async def logout_all(self, *, user_id: uuid.UUID, client: ClientInfo, now: datetime) -> int:
        """Revoke every session of the user; returns how many were live."""
        async with self._uow.write():
            count = await self._sessions.revoke_all_for_user(user_id, now, "logout_all")
            self._uow.record(
                AuthEvent(
                    EventType.LOGOUT,
                    now,
                    user_id=user_id,
                    ip_address=client.ip_address,
                    user_agent=client.user_agent,
                    reason=Reason.ALL_SESSIONS,
                    sessions_revoked=count,
                )
            )
        return count

    async def list_sessions(
        self, *, user_id: uuid.UUID, current_session: str, now: datetime
    ) -> list[SessionOut]:
        """The user's live sessions, newest first; ``current`` marks ``current_session``."""
        async with self._uow.read():
            rows = await self._sessions.list_live(user_id, now)
        return [
            SessionOut(
                id=s.id,
                created_at=s.created_at,
                last_used_at=s.last_used_at,
                expires_at=min(until, s.expires_at),
                user_agent=s.user_agent,
                ip_address=s.ip_address,
                current=str(s.id) == current_session,
            )
            for s, until in rows
        ]

    async def end_session(
        self, *, user_id: uuid.UUID, session_id: str, client: ClientInfo, now: datetime
    ) -> None:
        """Revoke one of the user's sessions; ``SessionNotFound`` for anyone else's (or none).

        Ending a session that already ended is not an error (DELETE is idempotent).
        """
        sid = _uuid(session_id)
        if sid is None:
            raise SessionNotFound()
        async with self._uow.write():
            owned = await self._sessions.owner_of(sid) == user_id
            if owned:
                await self._revoke(
                    sid, user_id, "revoked_by_user", EventType.SESSION_REVOKED, client, now
                )
        if not owned:
            raise SessionNotFound()

    # -- for other services ----------------------------------------------------------------

    async def revoke_token(
        self, *, token: str, hint: str | None, client: ClientInfo, now: datetime
    ) -> None:
        """RFC 7009: a refresh token revokes its session, an access token its ``sid``'s."""
        order: tuple[TokenTypeHint, ...] = (
            ("access_token", "refresh_token")
            if hint == "access_token"
            else ("refresh_token", "access_token")
        )
        async with self._uow.write():
            for kind in order:
                if kind == "refresh_token":
                    state = await self._refresh_token_state(token)
                    if state is not None:
                        await self._revoke(
                            state.session_id,
                            state.user_id,
                            "revoked",
                            EventType.SESSION_REVOKED,
                            client,
                            now,
                            event_reason=Reason.REFRESH_TOKEN_REVOKED,
                        )
                        return
                else:
                    ids = self._access_token_ids(token)
                    if ids is not None:
                        user_id, sid = ids
                        if await self._sessions.owner_of(sid) == user_id:
                            await self._revoke(
                                sid,
                                user_id,
                                "revoked",
                                EventType.SESSION_REVOKED,
                                client,
                                now,
                                event_reason=Reason.ACCESS_TOKEN_REVOKED,
                            )
                            return

    async def introspect(self, *, token: str, now: datetime) -> IntrospectionOut:
        """RFC 7662: the claims of a live token whose session is active, else only
        ``active: false``."""
        async with self._uow.read():
            return (
                await self._introspect_access(token, now)
                or await self._introspect_refresh(token, now)
                or IntrospectionOut(active=False)
            )

    # -- helpers ---------------------------------------------------------------------------

    async def _introspect_access(self, token: str, now: datetime) -> IntrospectionOut | None:
        try:
            claims = self._codec.decode_access_token(token)
        except (InvalidToken, TokenExpired):
            return None
        user_id, sid = _uuid(claims.sub), _uuid(claims.sid)
        if user_id is None or sid is None:
            return None
        user = await self._sessions.active_user(session_id=sid, user_id=user_id, now=now)
        if user is None:
            return None
        return self._active(claims, user.username, "access_token")

    async def _introspect_refresh(self, token: str, now: datetime) -> IntrospectionOut | None:
        try:
            claims = self._codec.decode_refresh_token(token)
        except InvalidRefreshToken:
            return None
        state = await self._sessions.token_state(token_hash(token))
        if (
            state is None
            or state.consumed_at is not None
            or state.session_revoked_at is not None
            or state.user_disabled_at is not None
            or state.token_expires_at <= now
            or state.session_expires_at <= now
        ):
            return None
        user = await self._users.get(state.user_id)
        if user is None:
            return None
        return self._active(claims, user.username, "refresh_token")

    def _active(
        self, claims: AccessClaims | RefreshClaims, username: str, kind: TokenTypeHint
    ) -> IntrospectionOut:
        """The answer for a live token: its claims, with the issuer and audience it was
        verified against (a refresh token's audience is its own)."""
        access = kind == "access_token"
        return IntrospectionOut(
            active=True,
            sub=claims.sub,
            username=username,
            exp=claims.exp,
            iat=claims.iat,
            iss=self._settings.issuer,
            aud=self._settings.audience if access else self._codec.refresh_audience,
            jti=claims.jti,
            sid=claims.sid,
            token_type=kind,
        )

    async def _refresh_token_state(self, token: str) -> TokenState | None:
        """The stored state of a genuine refresh token of ours, or ``None``."""
        try:
            self._codec.decode_refresh_token(token)
        except InvalidRefreshToken:
            return None
        return await self._sessions.token_state(token_hash(token))

    def _access_token_ids(self, token: str) -> tuple[uuid.UUID, uuid.UUID] | None:
        """(user, session) of a genuine, unexpired access token, or ``None``."""
        try:
            claims = self._codec.decode_access_token(token)
        except (InvalidToken, TokenExpired):
            return None
        user_id, sid = _uuid(claims.sub), _uuid(claims.sid)
        return (user_id, sid) if user_id is not None and sid is not None else None

    async def _revoke(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        reason: str,
        event_type: EventType,
        client: ClientInfo,
        now: datetime,
        *,
        event_reason: Reason | None = None,
    ) -> None:
        """Revoke one session and record the event, in the caller's write unit."""
        revoked = await self._sessions.revoke(session_id, now, reason)
        self._uow.record(
            AuthEvent(
                event_type,
                now,
                user_id=user_id,
                session_id=session_id,
                ip_address=client.ip_address,
                user_agent=client.user_agent,
                reason=event_reason,
                sessions_revoked=int(revoked),
            )
        )
