"""The HTTP/1.1 protocol ``authsvc serve`` runs: uvicorn's httptools one, with the request
head bounded in size and in time.

uvicorn's httptools protocol puts no limit on the request head: a client can send
megabytes of headers, or send them a byte every few seconds and hold a connection forever
(uvicorn's keep-alive timeout only runs between requests). Here:

- the header fields of one request may total ``MAX_HEADER_BYTES`` (16 KiB, names and
  values with their separators); one byte more and the request is answered 431 and the
  connection closed, before the application sees anything;
- while a head is incomplete, at most ``MAX_HEAD_BYTES`` (the header allowance plus 8 KiB
  for the request line) are buffered: the count is taken on every read, so a huge header
  costs at most that plus one read from the socket before the connection is closed;
- a head must be complete within ``HEAD_TIMEOUT_SECONDS`` of its first byte (of the
  connection, for the first request); otherwise the connection is closed. A slow client
  thus holds at most ``MAX_HEAD_BYTES`` for at most that long.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from authsvc.errors import ErrorCode

MAX_HEADER_BYTES = 16 * 1024
MAX_HEAD_BYTES = MAX_HEADER_BYTES + 8 * 1024
HEAD_TIMEOUT_SECONDS = 10.0

_BODY = json.dumps(
    {
        "error": str(ErrorCode.HEADERS_TOO_LARGE),
        "detail": f"The request headers exceed {MAX_HEADER_BYTES} bytes.",
    }
).encode()
_TOO_LARGE = b"".join(
    [
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(_BODY)).encode() + b"\r\n",
        b"x-content-type-options: nosniff\r\n",
        b"connection: close\r\n\r\n",
        _BODY,
    ]
)


class _HeadTooLarge(Exception):
    """Raised from the parser's header callback to stop parsing this connection."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the bounds of the module docstring (``--http`` class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_bytes = 0
        self._too_large = False
        self._head_timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            self._start_head_timer()
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error with 400; ours (a header callback that refused
        # to go on) is a 431.
        if self._too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._header_bytes = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_bytes > MAX_HEADER_BYTES:
            self._too_large = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    # -- refusing ------------------------------------------------------------------------

    def _refuse(self) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()
