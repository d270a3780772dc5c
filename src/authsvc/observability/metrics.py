"""Prometheus metrics: HTTP (a pure-ASGI middleware) plus the service's own.

Each app gets its own ``CollectorRegistry`` so that several apps can live in one process
(the test suite builds many). Under ``authsvc serve --workers N`` the CLI points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start; every worker
then writes its samples there and ``/metrics`` in any worker reads all of them, so the
totals are the service's, not one worker's.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc.services.events import AuthEvent, EventType

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# argon2id at the shipped cost takes tens of milliseconds; stronger settings, seconds.
HASH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LOGIN_OUTCOMES: dict[EventType, str] = {
    EventType.LOGIN_SUCCEEDED: "success",
    EventType.LOGIN_FAILED: "invalid_credentials",
    EventType.LOGIN_DISABLED: "account_disabled",
    EventType.LOGIN_THROTTLED: "throttled",
}
REFRESH_OUTCOMES: dict[EventType, str] = {
    EventType.REFRESH_ROTATED: "rotated",
    EventType.REFRESH_GRACE: "grace",
    EventType.REFRESH_REUSED: "reused",
    EventType.REFRESH_EXPIRED: "expired",
    EventType.REFRESH_REVOKED: "revoked",
    EventType.REFRESH_INVALID: "invalid",
}
# Events that end sessions, and the reason label they count under.
REVOCATIONS: dict[EventType, str] = {
    EventType.SESSION_REVOKED: "revoked",
    EventType.LOGOUT: "logout",
    EventType.USER_DISABLED: "user_disabled",
}

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class ServiceMetrics:
    """The service's own metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.logins = Counter(
            "authsvc_logins_total",
            "Login attempts by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.refreshes = Counter(
            "authsvc_refreshes_total",
            "Refresh-token presentations by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.sessions_revoked = Counter(
            "authsvc_sessions_revoked_total",
            "Sessions ended before their cap, by reason.",
            ["reason"],
            registry=registry,
        )
        self.audit_unrecorded = Counter(
            "authsvc_audit_events_unrecorded_total",
            "Audit events that could not be written (failed and throttled logins and refreshes,"
            " written best-effort), by event.",
            ["event"],
            registry=registry,
        )
        self.password_hash_seconds = Histogram(
            "authsvc_password_hash_seconds",
            "Time spent in argon2id, per operation (hash, verify), excluding queueing.",
            ["operation"],
            buckets=HASH_BUCKETS,
            registry=registry,
        )
        # One sample per live worker process ("livesum" drops a worker once it is marked
        # dead), so the operator sees how many workers actually serve.
        self.workers = Gauge(
            "authsvc_workers",
            "Worker processes serving.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        for outcome in LOGIN_OUTCOMES.values():
            self.logins.labels(outcome)
        for outcome in REFRESH_OUTCOMES.values():
            self.refreshes.labels(outcome)
        for operation in ("hash", "verify"):
            self.password_hash_seconds.labels(operation)

    def observe_hash(self, operation: str, seconds: float) -> None:
        self.password_hash_seconds.labels(operation).observe(seconds)


class MetricsSink:
    """An ``EventSink`` that counts authentication outcomes."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    async def record(self, event: AuthEvent) -> None:
        if (outcome := LOGIN_OUTCOMES.get(event.type)) is not None:
            self._metrics.logins.labels(outcome).inc()
        elif (outcome := REFRESH_OUTCOMES.get(event.type)) is not None:
            self._metrics.refreshes.labels(outcome).inc()
            if event.type is EventType.REFRESH_REUSED and event.sessions_revoked:
                self._metrics.sessions_revoked.labels("reuse_detected").inc(event.sessions_revoked)
        elif (reason := REVOCATIONS.get(event.type)) is not None and event.sessions_revoked:
            self._metrics.sessions_revoked.labels(reason).inc(event.sessions_revoked)
        if not event.audited:
            self._metrics.audit_unrecorded.labels(str(event.type)).inc()


# The HTTP metrics keep the names, labels and buckets this service has always exported
# (those of prometheus-fastapi-instrumentator), so dashboards and alerts keep working.
LATENCY_HIGHR_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5,
    10, 30, 60,
)  # fmt: skip
LATENCY_LOWR_BUCKETS = (0.1, 0.5, 1)
UNTEMPLATED = "none"  # the handler label of a request that matched no route
EXCLUDED_HANDLERS = frozenset({"/metrics"})


class HTTPMetricsMiddleware:
    """Request counts and latency per route template (``handler``), as pure ASGI.

    The route is read from the scope once the application has handled the request (the
    router records the matched route there), so no second routing pass per request.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["method", "status", "handler"],
            registry=registry,
        )
        self.latency_highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. "
            "Made for more accurate percentile calculations. ",
            buckets=LATENCY_HIGHR_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. "
            "Made to be only used if aggregation by handler is important. ",
            ["method", "handler"],
            buckets=LATENCY_LOWR_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            handler = getattr(route, "path_format", None) or getattr(route, "path", None)
            handler = handler or UNTEMPLATED
            if handler not in EXCLUDED_HANDLERS:
                duration = max(time.perf_counter() - started, 0.0)
                method = scope["method"]
                self.requests.labels(method, str(status), handler).inc()
                self.latency_highr.observe(duration)
                self.latency.labels(method, handler).observe(duration)


def render(registry: CollectorRegistry) -> bytes:
    """The exposition text: every worker's samples in multiprocess mode, else this app's."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(registry)
    mark_dead_workers(directory)
    merged = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(merged, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(merged)


def mark_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that died without saying so (killed, crashed).

    Counters and histograms of dead workers stay: their counts still belong to the totals.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            pid = int(match.group(1))
            prom_multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def mark_this_worker_dead() -> None:
    directory = multiprocess_dir()
    if directory is not None:
        prom_multiprocess.mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
