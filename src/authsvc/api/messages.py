"""The messages of 422 ``validation_error``: sentences about the contract's fields.

Pydantic's own messages name regular expressions, model classes and parser positions; none of
them reaches a client. Each error keeps its ``type`` and ``loc`` (FastAPI's shape) and gets a
``msg`` from here, by field and kind; an error this module does not know still gets a sentence
naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from authsvc.schemas import LOGIN_PASSWORD_MAX, SCOPE_MAX
from authsvc.security.usernames import MAX_LENGTH, MIN_LENGTH

USERNAME_RULE = f"{MIN_LENGTH} to {MAX_LENGTH} characters: ASCII letters, digits and . _ - @"

# How each field is named in a sentence.
_LABELS = {
    "username": "The username",
    "password": "The password",
    "refresh_token": "The refresh token",
    "token": "The token",
    "token_type_hint": "The token type hint",
    "grant_type": "grant_type",
    "scope": "The scope",
    "transport": "The transport parameter",
}
_STRING_TYPES = {"string_type", "string_sub_type", "str_type"}
_LENGTH_TYPES = {"string_too_short", "string_too_long", "string_pattern_mismatch"}
_OBJECT_TYPES = {"model_type", "model_attributes_type", "dict_type", "dict_attributes_type"}

# Field-specific sentences by error type ("*": any type not listed).
_BY_FIELD: dict[str, dict[str, str]] = {
    "username": dict.fromkeys(_LENGTH_TYPES, f"The username must be {USERNAME_RULE}."),
    "password": {
        "string_too_short": "The password must not be empty.",
        "string_too_long": f"The password must be at most {LOGIN_PASSWORD_MAX} characters long.",
    },
    "refresh_token": {
        "missing": "A refresh token is required, in the body or the authsvc_refresh cookie.",
        "string_too_short": "The refresh token must not be empty.",
    },
    "grant_type": {
        "literal_error": "grant_type must be `password` or `refresh_token`.",
        "enum": "grant_type must be `password` or `refresh_token`.",
    },
    "scope": {"string_too_long": f"The scope must be at most {SCOPE_MAX} characters long."},
    "transport": {
        "literal_error": "The transport parameter must be `json` or `cookie`.",
        "enum": "The transport parameter must be `json` or `cookie`.",
    },
}


def _field(loc: Sequence[Any]) -> str | None:
    names = [str(part) for part in loc[1:] if not isinstance(part, int)]
    return names[-1] if names else None


def message(error: Mapping[str, Any]) -> str:
    """The sentence for one pydantic/FastAPI error."""
    kind = str(error.get("type", ""))
    loc = list(error.get("loc", ()))
    field = _field(loc)
    if field is None:  # the body as a whole
        if kind in ("json_invalid", "form_invalid", "missing"):
            return str(error.get("msg") or "A body is required.")
        if kind in _OBJECT_TYPES:
            return "The body must be a JSON object."
        return "The body is not valid."
    label = _LABELS.get(field, f"The field `{field}`")
    specific = _BY_FIELD.get(field, {})
    if kind in specific:
        return specific[kind]
    if kind == "missing":
        return f"{label} is required."
    if kind in _STRING_TYPES:
        return f"{label} must be a string."
    if kind in ("string_unicode", "value_error"):
        # The schemas' only value check: text UTF-8 can hold (no lone surrogates).
        return f"{label} must be valid Unicode text."
    if kind in _OBJECT_TYPES:
        return f"{label} must be an object."
    return f"{label} is not valid."


def humanize(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's error list as ``{"type", "loc", "msg"}`` entries with our sentences (never
    the input, a pattern, a class name or a position)."""
    return [
        {
            "type": str(error.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
            "msg": message(error),
        }
        for error in errors
    ]
