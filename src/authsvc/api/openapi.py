"""The OpenAPI document, with what depends on this app's settings filled in."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from authsvc.config import Settings


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Generate the document once, stating the configured minimum password length at
    ``/register`` (so the schema says exactly which passwords the policy's length allows)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = copy.deepcopy(generate())
            body = document["paths"]["/register"]["post"]["requestBody"]["content"]
            for media in body.values():
                media["schema"]["properties"]["password"]["minLength"] = (
                    settings.passwords.password_min_length
                )
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
