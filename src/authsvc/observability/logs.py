"""Structured logs: one JSON object per line, or a readable line for a terminal.

Log records carry their data in ``extra={"fields": {...}}``; the formatters render it. The
request id of the request being served is added to every record. Nothing here ever sees a
header or a body, so no token, password or hash can reach a log line.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from authsvc.services.events import AuthEvent, EventType

request_id_var: ContextVar[str | None] = ContextVar("authsvc_request_id", default=None)

LogFormat = Literal["auto", "json", "text"]

EVENT_LOGGER = "authsvc.events"
ACCESS_LOGGER = "authsvc.access"

# Events an operator should notice: someone replayed a rotated token, or is guessing.
_WARNING_EVENTS = frozenset(
    {EventType.REFRESH_REUSED, EventType.LOGIN_THROTTLED, EventType.REGISTRATION_THROTTLED}
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    request_id = request_id_var.get()
    if request_id is not None:
        fields.setdefault("request_id", request_id)
    return fields


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger message key=value ...`` for a human at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if pairs:
            line = f"{line}  {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _text_value(value: Any) -> str:
    # Quoted (with escapes) when it could break the line apart or fake another field:
    # a request path is the client's choice.
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' ="'):
        return text
    return json.dumps(text, ensure_ascii=False)


def resolve_format(setting: LogFormat) -> Literal["json", "text"]:
    if setting != "auto":
        return setting
    return "text" if sys.stderr.isatty() else "json"


def logging_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config`` (applied in every worker).

    uvicorn's own access log is off (``serve`` passes ``access_log=False``); our request
    middleware writes one line per request instead.
    """
    formatter = "json" if resolve_format(log_format) == "json" else "text"
    handler = {
        "class": "logging.StreamHandler",
        "formatter": formatter,
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "authsvc.observability.logs.JsonFormatter"},
            "text": {"()": "authsvc.observability.logs.TextFormatter"},
        },
        "handlers": {"default": handler},
        "loggers": {
            "authsvc": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


class LogSink:
    """An ``EventSink`` that writes one structured line per authentication event.

    A username is logged only once it is known to be a user's: a failed login's "username"
    may be a password typed into the wrong field.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(EVENT_LOGGER)

    async def record(self, event: AuthEvent) -> None:
        level = logging.WARNING if event.type in _WARNING_EVENTS else logging.INFO
        if not self._logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"event": str(event.type)}
        if event.user_id is not None:
            fields["user_id"] = str(event.user_id)
            if event.username is not None:
                fields["username"] = event.username
        if event.session_id is not None:
            fields["session_id"] = str(event.session_id)
        if event.ip_address is not None:
            fields["client"] = event.ip_address
        if event.detail is not None:
            fields["detail"] = event.detail
        if event.sessions_revoked is not None and event.session_id is None:
            # An event about several sessions says how many it ended.
            fields["sessions_revoked"] = str(event.sessions_revoked)
        request_id = request_id_var.get()
        if request_id is not None:
            fields["request_id"] = request_id
        self._logger.log(level, str(event.type), extra={"fields": fields})
