"""Auth events become the right counter increments (label values from a fixed set)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from authsvc.observability.metrics import MetricsSink, ServiceMetrics
from authsvc.services.events import AuthEvent, EventType

NOW = datetime.now(UTC)
SID = uuid.uuid4()


def revoked(metrics: ServiceMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("authsvc_sessions_revoked_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("event", "reason", "count"),
    [
        (AuthEvent(EventType.LOGOUT, NOW, session_id=SID), "logout", 1),
        (AuthEvent(EventType.LOGOUT, NOW, session_id=SID, detail="already ended"), "logout", 0),
        (AuthEvent(EventType.LOGOUT, NOW, extra={"sessions_revoked": "3"}), "logout", 3),
        (AuthEvent(EventType.LOGOUT, NOW, extra={"sessions_revoked": "0"}), "logout", 0),
        (
            AuthEvent(
                EventType.SESSION_REVOKED,
                NOW,
                session_id=SID,
                detail="refresh token revoked (RFC 7009)",
            ),
            "revoked",
            1,
        ),
        (
            AuthEvent(EventType.USER_DISABLED, NOW, extra={"sessions_revoked": "2"}),
            "user_disabled",
            2,
        ),
        (
            AuthEvent(EventType.USER_DISABLED, NOW, extra={"sessions_revoked": "5"}),
            "user_disabled",
            5,
        ),
        (
            AuthEvent(EventType.REFRESH_REUSED, NOW, session_id=SID, detail="session_revoked"),
            "reuse_detected",
            1,
        ),
        (AuthEvent(EventType.REFRESH_REUSED, NOW, session_id=SID), "reuse_detected", 0),
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
