"""The application factory. Nothing is built at import: the lifespan owns all I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from authsvc import __version__
from authsvc.api.context import AppContext
from authsvc.api.errors import install_error_handlers
from authsvc.api.middleware import (
    BodySizeLimitMiddleware,
    SecurityHeadersMiddleware,
    StrictTransportSecurityMiddleware,
)
from authsvc.api.openapi import install_openapi
from authsvc.api.requestlog import RequestContextMiddleware
from authsvc.api.routes import auth, oauth, ops, sessions, users, wellknown
from authsvc.config import Settings, get_settings
from authsvc.db import make_engine, make_sessionmaker
from authsvc.observability.logs import LogSink
from authsvc.observability.metrics import (
    HTTPMetricsMiddleware,
    MetricsSink,
    ServiceMetrics,
    mark_this_worker_dead,
)
from authsvc.security.keys import load_previous_keys, load_signing_key
from authsvc.security.passwords import PasswordHasher, machine_slots_from_env
from authsvc.security.tokens import TokenCodec
from authsvc.services.events import EventSink, FanOut
from authsvc.services.purge import start_background_purge, stop_background_purge
from authsvc.services.throttle import build_shared_throttle

DESCRIPTION = """
Password login that hands out a short-lived JWT **access token** and a rotating
**refresh token** with reuse detection. Other services verify access tokens with the keys
at `/.well-known/jwks.json`.

Use **Authorize** with a username and password to try the protected endpoints.
"""


def build_hasher(settings: Settings, metrics: ServiceMetrics | None = None) -> PasswordHasher:
    return PasswordHasher(
        memory_cost=settings.passwords.argon2_memory_cost,
        time_cost=settings.passwords.argon2_time_cost,
        parallelism=settings.passwords.argon2_parallelism,
        concurrency=settings.passwords.password_hash_concurrency,
        queue_max=settings.passwords.password_hash_queue_max,
        observe=metrics.observe_hash if metrics is not None else None,
        machine_slots=machine_slots_from_env(),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Per app, so that several apps can share a process (tests); see observability.metrics.
    metrics = ServiceMetrics(CollectorRegistry(auto_describe=True))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        hasher = build_hasher(settings, metrics)
        # After its change commits (with its audit row), every event goes to the metrics,
        # then the structured log.
        sinks: list[EventSink] = [MetricsSink(metrics), LogSink()]
        await hasher.dummy_verify("")  # computes the dummy hash before the first login
        sessionmaker = make_sessionmaker(engine)
        app.state.ctx = AppContext(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            hasher=hasher,
            codec=TokenCodec(settings, load_signing_key(settings), load_previous_keys(settings)),
            events=FanOut(sinks),
            throttle=build_shared_throttle(settings),
        )
        metrics.workers.set(1)
        purger = start_background_purge(settings, sessionmaker)
        try:
            yield
        finally:
            await stop_background_purge(purger)
            mark_this_worker_dead()
            await engine.dispose()
            hasher.close()

    app = FastAPIOffline(
        title="authsvc",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"persistAuthorization": False},
        # FastAPI's own OpenTelemetry hooks ask the global providers on every request; the
        # service exports Prometheus metrics and JSON logs instead (docs/observability.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(wellknown.router)
    app.include_router(sessions.router)
    app.include_router(oauth.router)
    app.include_router(ops.router)
    install_openapi(app, settings)

    if settings.clients.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.clients.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    # Outermost but for metrics and the request log, so an oversized body is refused
    # before anything reads it.
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(HTTPMetricsMiddleware, registry=metrics.registry)
    # Outermost: every response, a 413 or a 500 included, carries X-Request-ID and is logged.
    app.add_middleware(RequestContextMiddleware)
    # Outside even that: HSTS goes on every HTTPS response, whoever sent it.
    app.add_middleware(
        StrictTransportSecurityMiddleware, trusted_proxies=settings.operations.trusted_proxies
    )
    return app
