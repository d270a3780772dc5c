"""Liveness, readiness and metrics: the operator's endpoints."""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from authsvc.api.deps import ContextDep
from authsvc.observability.metrics import CONTENT_TYPE, render

router = APIRouter(tags=["operations"])
logger = logging.getLogger("authsvc.readiness")

# Readiness must answer quickly even when the database hangs: a probe that times out
# tells the orchestrator less than a prompt 503.
READY_TIMEOUT_CAP_SECONDS = 3.0
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz", summary="Liveness: the process serves (no database check)")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.get(
    "/readyz",
    summary="Readiness: the database answers",
    responses={503: {"description": '`{"status": "unavailable", "database": "unreachable"}`'}},
)
async def readyz(ctx: ContextDep) -> JSONResponse:
    timeout = min(ctx.settings.database.db_connect_timeout_seconds + 0.5, READY_TIMEOUT_CAP_SECONDS)
    try:
        with anyio.fail_after(timeout):
            async with ctx.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to answer means "not ready", whatever its kind
        logger.warning("database not ready", extra={"fields": {"error": type(exc).__name__}})
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers={**NO_STORE, "Retry-After": "5"},
        )
    return JSONResponse({"status": "ok", "database": "ok"}, headers=NO_STORE)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    # In multiprocess mode this reads every worker's files: off the event loop.
    body = await anyio.to_thread.run_sync(render, registry)
    return Response(body, media_type=CONTENT_TYPE, headers=NO_STORE)
