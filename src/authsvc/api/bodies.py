"""Bodies that come as JSON or as a form (the OAuth2 password flow, RFC 7009/7662 clients)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

ModelT = TypeVar("ModelT", bound=BaseModel)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class MalformedBody(Exception):
    """The body is neither a readable form nor JSON; ``str()`` says why."""


async def read_json_or_form(request: Request, *, empty: Any = None) -> Any:
    """The body as a dict of form fields or as parsed JSON, by ``Content-Type``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        try:
            form = await request.form()
        except (HTTPException, ValueError, KeyError, AssertionError):
            # Starlette reports a broken multipart body as its own HTTPException(400).
            raise MalformedBody("The form body could not be parsed.") from None
        return {k: v for k, v in form.items() if isinstance(v, str)}
    raw = await request.body()
    if not raw:
        return empty
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deep enough to exhaust the parser, well within 64 KiB.
        raise MalformedBody("The body is not valid JSON.") from None


async def read_body(request: Request) -> Any:
    """``read_json_or_form``; a malformed body is a 422 ``validation_error``."""
    try:
        return await read_json_or_form(request)
    except MalformedBody as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": str(exc)}]
        ) from None


def validate_body(data: Any, model: type[ModelT]) -> ModelT:
    """``data`` as ``model``; invalid is a 422 ``validation_error`` (never echoing input)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


async def parse_json_or_form(request: Request, model: type[ModelT]) -> ModelT:
    """Validate the body as ``model``; a malformed body is a 422 ``validation_error``."""
    return validate_body(await read_body(request), model)


def json_or_form_body(*models: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a body accepted as JSON or as a form: one model, or
    any of several."""
    schemas = [m.model_json_schema(ref_template="#/components/schemas/{model}") for m in models]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }
