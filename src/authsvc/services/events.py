"""Authentication events: what happened, to whom, from where. Never a token or password.

Services report events to an ``EventSink``; the audit trail, metrics and structured logs
are sinks. A sink is called after the change it reports has been committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class AuthEvent:
    type: EventType
    at: datetime
    user_id: uuid.UUID | None = None
    username: str | None = None
    session_id: uuid.UUID | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    detail: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


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
