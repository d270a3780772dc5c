"""Auth events become the right counter increments (label values from a fixed set)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from authsvc.observability.metrics import MetricsSink, ServiceMetrics
from authsvc.services.events import AuthEvent, EventType, Reason

NOW = datetime.now(UTC)
SID = uuid.uuid4()


def revoked(metrics: ServiceMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("authsvc_sessions_revoked_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("event", "reason", "count"),
    [
        (AuthEvent(EventType.LOGOUT, NOW, session_id=SID, sessions_revoked=1), "logout", 1),
        (AuthEvent(EventType.LOGOUT, NOW, session_id=SID, sessions_revoked=0), "logout", 0),
        (
            AuthEvent(EventType.LOGOUT, NOW, reason=Reason.ALL_SESSIONS, sessions_revoked=3),
            "logout",
            3,
        ),
        (
            AuthEvent(EventType.LOGOUT, NOW, reason=Reason.ALL_SESSIONS, sessions_revoked=0),
            "logout",
            0,
        ),
        (
            AuthEvent(
                EventType.SESSION_REVOKED,
                NOW,
                session_id=SID,
                reason=Reason.REFRESH_TOKEN_REVOKED,
                sessions_revoked=1,
            ),
            "revoked",
            1,
        ),
        (AuthEvent(EventType.USER_DISABLED, NOW, sessions_revoked=2), "user_disabled", 2),
        (AuthEvent(EventType.USER_DISABLED, NOW, sessions_revoked=5), "user_disabled", 5),
        (
            AuthEvent(EventType.REFRESH_REUSED, NOW, session_id=SID, sessions_revoked=1),
            "reuse_detected",
            1,
        ),
        (
            AuthEvent(EventType.REFRESH_REUSED, NOW, session_id=SID, sessions_revoked=0),
            "reuse_detected",
            0,
        ),
    ],
)
async def test_revocations_count_sessions_under_a_fixed_reason(
    event: AuthEvent, reason: str, count: int
) -> None:
    metrics = ServiceMetrics(CollectorRegistry())
    await MetricsSink(metrics).record(event)
    assert revoked(metrics, reason) == count
    # Free-text details never become label values.
    reasons = {
        s.labels["reason"]
        for family in metrics.registry.collect()
        if family.name == "authsvc_sessions_revoked"
        for s in family.samples
    }
    assert reasons <= {"logout", "revoked", "user_disabled", "reuse_detected"}


async def test_login_outcomes() -> None:
    metrics = ServiceMetrics(CollectorRegistry())
    sink = MetricsSink(metrics)
    for kind in (
        EventType.LOGIN_SUCCEEDED,
        EventType.LOGIN_FAILED,
        EventType.LOGIN_FAILED,
        EventType.LOGIN_DISABLED,
        EventType.LOGIN_THROTTLED,
        EventType.USER_REGISTERED,
    ):
        await sink.record(AuthEvent(kind, NOW))
    value = metrics.registry.get_sample_value
    assert value("authsvc_logins_total", {"outcome": "success"}) == 1
    assert value("authsvc_logins_total", {"outcome": "invalid_credentials"}) == 2
    assert value("authsvc_logins_total", {"outcome": "account_disabled"}) == 1
    assert value("authsvc_logins_total", {"outcome": "throttled"}) == 1


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (AuthEvent(EventType.LOGOUT, NOW, session_id=SID, sessions_revoked=1), None),
        (AuthEvent(EventType.LOGOUT, NOW, session_id=SID, sessions_revoked=0), "already ended"),
        (
            AuthEvent(EventType.LOGOUT, NOW, reason=Reason.ALL_SESSIONS, sessions_revoked=3),
            "all sessions (3 revoked)",
        ),
        (AuthEvent(EventType.USER_DISABLED, NOW, sessions_revoked=2), "2 session(s) revoked"),
        (
            AuthEvent(
                EventType.SESSION_REVOKED,
                NOW,
                reason=Reason.ACCESS_TOKEN_REVOKED,
                sessions_revoked=1,
            ),
            "access token revoked (RFC 7009)",
        ),
        (
            AuthEvent(
                EventType.SESSION_REVOKED,
                NOW,
                reason=Reason.ACCESS_TOKEN_REVOKED,
                sessions_revoked=0,
            ),
            "already ended",
        ),
        (AuthEvent(EventType.REFRESH_REUSED, NOW, sessions_revoked=1), "session_revoked"),
        (AuthEvent(EventType.LOGIN_FAILED, NOW, reason=Reason.WRONG_PASSWORD), "wrong_password"),
    ],
)
def test_the_detail_the_trail_and_the_logs_show_follows_the_typed_fields(
    event: AuthEvent, detail: str | None
) -> None:
    assert event.detail == detail


async def test_an_event_the_trail_could_not_take_is_counted() -> None:
    metrics = ServiceMetrics(CollectorRegistry())
    await MetricsSink(metrics).record(AuthEvent(EventType.LOGIN_FAILED, NOW, audited=False))
    await MetricsSink(metrics).record(AuthEvent(EventType.LOGIN_FAILED, NOW))
    value = metrics.registry.get_sample_value(
        "authsvc_audit_events_unrecorded_total", {"event": "login_failed"}
    )
    assert value == 1
