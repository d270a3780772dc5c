"""Request ids and the access log, as pure ASGI middleware (outermost in the stack)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc.api.middleware import send_error
from authsvc.observability.logs import ACCESS_LOGGER, request_id_var

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept only if it is short and cannot smuggle anything into a log line.
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")

# Paths are the client's choice: enough to read, not enough to flood the log.
MAX_LOGGED_PATH = 512

logger = logging.getLogger(ACCESS_LOGGER)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _SAFE_REQUEST_ID.fullmatch(value):
            return bytes(value).decode("ascii")
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Give each request an id (``X-Request-ID`` kept when safe, generated otherwise),
    echo it on the response, and log one line when the response is done: method, path
    (never the query string), status, duration, request id, client address.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != REQUEST_ID_HEADER),
                    (REQUEST_ID_HEADER, request_id.encode("ascii")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is None:
                # Unhandled: answer in the contract's shape (with the id), log, and let the
                # server log the traceback.
                status = 500
                await _send_internal_error(send_with_id)
            raise
        finally:
            client = scope.get("client")
            logger.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"][:MAX_LOGGED_PATH],
                        "status": status if status is not None else 0,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "request_id": request_id,
                        "client": client[0] if client else None,
                    }
                },
            )
            request_id_var.reset(token)


async def _send_internal_error(send: Send) -> None:
    await send_error(send, 500, "internal_error", "The server failed to handle the request.")
