"""The one body reader of every endpoint: JSON by ``Content-Type``, a form where the endpoint
takes one (the OAuth2 password flow, RFC 7009/7662 clients), 415 for anything else.

A malformed body gets the same 422 at every endpoint; the messages are written in
``api.messages``.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from authsvc.errors import UnsupportedMediaType

ModelT = TypeVar("ModelT", bound=BaseModel)
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_TYPES = (FORM_TYPE, "multipart/form-data")


class _NoBody:
    """What ``read_body`` returns for a request without a body (JSON ``null`` is ``None``)."""


NO_BODY: Any = _NoBody()


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    """``application/json`` or a structured ``+json`` type (RFC 6839)."""
    return media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json"))


def _invalid(kind: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message}])


async def read_body(request: Request, *, form: bool = False) -> Any:
    """The body: parsed JSON, or (where ``form``) a form's text fields; ``NO_BODY`` when the
    request has none. Another content type is ``UnsupportedMediaType`` (415)."""
    raw = await request.body()
    if not raw:
        return NO_BODY
    media = media_type(request)
    if form and media in FORM_TYPES:
        try:
            # Starlette re-reads the body it cached above.
            fields = await request.form()
        except (HTTPException, ValueError, KeyError, AssertionError):
            # Starlette reports a broken multipart body as its own HTTPException(400).
            raise _invalid("form_invalid", "The form body could not be parsed.") from None
        return {k: v for k, v in fields.items() if isinstance(v, str)}
    if not is_json(media):
        raise UnsupportedMediaType(
            "The body must be JSON (Content-Type: application/json)"
            + (f" or a form ({FORM_TYPE})." if form else ".")
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deep enough to exhaust the parser, well within 64 KiB.
        raise _invalid("json_invalid", "The body is not valid JSON.") from None


def validate_body(data: Any, model: type[ModelT]) -> ModelT:
    """``data`` as ``model``; invalid is a 422 ``validation_error`` (never echoing input)."""
    if data is NO_BODY:
        raise _invalid("missing", "A body is required: a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


async def parse_body(request: Request, model: type[ModelT], *, form: bool = False) -> ModelT:
    """The body validated as ``model``; none at all is a 422 like any malformed body."""
    return validate_body(await read_body(request, form=form), model)


async def parse_optional_body(request: Request, model: type[ModelT]) -> ModelT | None:
    """The JSON body validated as ``model``, or ``None`` when there is none (or it is
    ``null``): for endpoints that take their input from a cookie instead."""
    data = await read_body(request)
    return None if data is None or data is NO_BODY else validate_body(data, model)


def json_or_form_body(
    *models: type[BaseModel] | dict[str, Any], form: bool = True, required: bool = True
) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by this module: one model (or JSON Schema),
    or any of several, as JSON and, where ``form``, as a form."""
    schemas = [
        m
        if isinstance(m, dict)
        else m.model_json_schema(ref_template="#/components/schemas/{model}")
        for m in models
    ]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    content = {JSON_TYPE: {"schema": schema}}
    if form:
        content[FORM_TYPE] = {"schema": schema}
    return {"requestBody": {"required": required, "content": content}}


def json_body(model: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body."""
    return json_or_form_body(model, form=False)
