"""``responses=`` tables for the docs page."""

from __future__ import annotations

from typing import Any

from authsvc.errors import ErrorCode
from authsvc.schemas import ErrorBody, ValidationErrorBody


def errors(*codes: tuple[int, ErrorCode | str, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the docs: each status with the error codes it can carry."""
    out: dict[int | str, dict[str, Any]] = {}
    for status_code, code, text in codes:
        model = ValidationErrorBody if status_code == 422 else ErrorBody
        entry = out.setdefault(status_code, {"model": model, "description": ""})
        entry["description"] = " · ".join(filter(None, [entry["description"], f"`{code}`: {text}"]))
    return out


BEARER_ERRORS = errors(
    (401, ErrorCode.NOT_AUTHENTICATED, "no Bearer token"),
    (401, ErrorCode.TOKEN_EXPIRED, "the access token expired"),
    (401, ErrorCode.INVALID_TOKEN, "forged, malformed, or its session or user is no longer active"),
)
