"""Authentication events: what happened, to whom, from where. Never a token or password.

Services record events in their unit of work (``services.uow``): the audit row is written in
the transaction of the change it records; the other sinks (metrics, structured logs) see the
event once that transaction has committed. Sinks read the typed fields (``reason``,
``sessions_revoked``); ``detail`` is the text the audit trail and the logs show for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class EventType(StrEnum):
    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    LOGIN_THROTTLED = "login_throttled"
    LOGIN_DISABLED = "login_disabled"
    REFRESH_ROTATED = "refresh_rotated"
    REFRESH_GRACE = "refresh_grace_retry"
    REFRESH_REUSED = "refresh_reuse_detected"
    REFRESH_EXPIRED = "refresh_expired"
    REFRESH_REVOKED = "refresh_revoked"
    REFRESH_INVALID = "refresh_invalid"
    SESSION_REVOKED = "session_revoked"
    LOGOUT = "logout"
    USER_REGISTERED = "user_registered"
    REGISTRATION_THROTTLED = "registration_throttled"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"


class Reason(StrEnum):
    """Why an event happened, where its type alone does not say."""

    UNKNOWN_USER = "unknown_user"  # a failed login: no such user
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - a failed login: the user exists
    ALL_SESSIONS = "all_sessions"  # a logout of every session of the user
    REFRESH_TOKEN_REVOKED = "refresh_token_revoked"  # noqa: S105 - RFC 7009, by a refresh token
    ACCESS_TOKEN_REVOKED = "access_token_revoked"  # noqa: S105 - RFC 7009, by an access token


@dataclass(frozen=True, slots=True)
class AuthEvent:
    type: EventType
    at: datetime
    user_id: uuid.UUID | None = None
    username: str | None = None
    session_id: uuid.UUID | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    reason: Reason | None = None
    # How many sessions the event ended (revocations, reuse detection, a disabled user).
    sessions_revoked: int | None = None
    # False once the audit trail could not take it (a best-effort event, see services.uow).
    audited: bool = True

    @property
    def detail(self) -> str | None:
        """The event's detail as the audit trail and the logs write it."""
        n = self.sessions_revoked
        if self.type is EventType.USER_DISABLED:
            return f"{n or 0} session(s) revoked"
        if self.reason is Reason.ALL_SESSIONS:
            return f"all sessions ({n or 0} revoked)"
        if self.type is EventType.REFRESH_REUSED:
            return "session_revoked" if n else None
        if self.type in (EventType.LOGOUT, EventType.SESSION_REVOKED) and n == 0:
            return "already ended"
        return _DETAILS.get(self.reason) if self.reason is not None else None


_DETAILS = {
    Reason.UNKNOWN_USER: "unknown_user",
    Reason.WRONG_PASSWORD: "wrong_password",
    Reason.REFRESH_TOKEN_REVOKED: "refresh token revoked (RFC 7009)",
    Reason.ACCESS_TOKEN_REVOKED: "access token revoked (RFC 7009)",
}


class EventSink(Protocol):
    async def record(self, event: AuthEvent) -> None: ...


class NullSink:
    async def record(self, event: AuthEvent) -> None:
        return None


class FanOut:
    """Sends each event to several sinks, in order."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self._sinks = list(sinks)

    async def record(self, event: AuthEvent) -> None:
        for sink in self._sinks:
            await sink.record(event)
