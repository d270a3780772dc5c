"""Pure ASGI middleware: the request-body cap, the security headers and HSTS."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc.api.proxies import came_over_https

MAX_BODY_BYTES = 64 * 1024


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``. An ``HTTPException`` so that FastAPI's body reader, which
    turns other exceptions into a generic 400, lets it through to the 413 handler."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body exceeds {max_bytes} bytes.")


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 ``payload_too_large`` before parsing.

    ``Content-Length`` is checked first, but the bytes are also counted as they stream in:
    a chunked body, or one that lies about its length, is cut off at the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_error(
            send,
            413,
            "payload_too_large",
            f"The request body exceeds {self.max_bytes} bytes.",
            # This middleware is outermost, so the security headers are added here.
            headers=[(b"connection", b"close"), *SecurityHeadersMiddleware.HEADERS],
        )


async def send_error(
    send: Send,
    status: int,
    code: str,
    detail: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole response in the contract's error shape, from pure-ASGI code."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """Headers every response carries."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# Two years, the figure browsers' preload lists ask for. No includeSubDomains: this service
# speaks for its own host only; a domain's owner sets that at the domain itself.
HSTS_HEADER = (b"strict-transport-security", b"max-age=63072000")


class StrictTransportSecurityMiddleware:
    """``Strict-Transport-Security`` on every response to a request that came over HTTPS
    (served with TLS, or forwarded by a trusted proxy that says so), and on no other.

    Outermost, so that responses sent by other middleware (413, 500) carry it too.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: list[str]) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not came_over_https(scope, self.trusted_proxies):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                message["headers"] = [
                    *(h for h in headers if h[0].lower() != HSTS_HEADER[0]),
                    HSTS_HEADER,
                ]
            await send(message)

        await self.app(scope, receive, send_with_hsts)
