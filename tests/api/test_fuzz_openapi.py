"""Schemathesis against the service's own OpenAPI document: every operation, generated valid
and invalid requests, with and without a bearer token, and every check schemathesis has,
including that schema-valid data is accepted. So the document states exactly what the server
accepts and answers: no 5xx, no response off its schema, no valid request refused.

AUTHSVC_TEST_FUZZ_EXAMPLES sets the examples per operation and variant (15 by default, to
stay fast).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.errors import WeakPassword
from authsvc.main import create_app
from authsvc.security.password_policy import check_password
from tests.conftest import FAST_HASH, PASSWORD, unique_username

INTROSPECTION_CLIENT = ("fuzz", "a-client-secret")
MIN_LENGTH = 12

# The document comes from the factory without starting anything (no lifespan, no I/O).
schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, env="test", password_min_length=MIN_LENGTH)).openapi()  # type: ignore[call-arg]
)
load_all_checks()
ALL_CHECKS = CHECKS.get_all()


def policy_valid(body: Any) -> Any:
    """At /register, a password in the schema's length range that the policy refuses for what
    JSON Schema cannot say (a common password, the username inside) is swapped for a strong
    one of the same length: the request stays schema-valid and must be accepted.
    tests/api/test_password_policy.py covers those refusals."""
    if not isinstance(body, dict):
        return body
    username, password = body.get("username"), body.get("password")
    if not (isinstance(username, str) and isinstance(password, str)):
        return body
    if not MIN_LENGTH <= len(password) <= 128:
        return body  # outside the documented range: schema-invalid, refused as weak_password
    try:
        check_password(password, username=username, min_length=MIN_LENGTH)
    except WeakPassword:
        strong = ("Zä7ß" * 32)[: len(password)]  # no two ASCII characters side by side
        return {**body, "password": strong}
    return body


@pytest.fixture(scope="session")
def fuzzed_app(database_url: str, key_dir: Path) -> FastAPI:
    """One app per database for the whole run; schemathesis runs its lifespan."""
    return create_app(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=database_url,
            data_dir=key_dir,
            env="test",
            password_min_length=MIN_LENGTH,
            introspection_clients=[":".join(INTROSPECTION_CLIENT)],
            **FAST_HASH,
        )
    )


@pytest.fixture
def credentials(fuzzed_app: FastAPI, clean_db: AsyncEngine) -> Iterator[dict[str, str]]:
    """A live user's bearer token (and the introspection client's Basic credentials)."""
    with TestClient(fuzzed_app) as http:
        username = unique_username("fuzz")
        registered = http.post("/register", json={"username": username, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        pair = http.post("/login", json={"username": username, "password": PASSWORD})
        assert pair.status_code == 200, pair.text
        yield {"bearer": pair.json()["access_token"]}


def test_every_check_runs() -> None:
    names = {getattr(c, "__name__", type(c).__name__) for c in ALL_CHECKS}
    assert {"positive_data_acceptance", "negative_data_rejection", "ignored_auth"} <= names


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "bearer"])
@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("AUTHSVC_TEST_FUZZ_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # clean_db empties the tables after all inputs
    ],
)
def test_every_operation_conforms(
    case: Any, fuzzed_app: FastAPI, credentials: dict[str, str], authenticated: bool
) -> None:
    if case.path == "/register":
        case.body = policy_valid(case.body)
    headers: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    if authenticated:
        if case.path == "/introspect":
            kwargs["auth"] = INTROSPECTION_CLIENT
        else:
            headers["Authorization"] = f"Bearer {credentials['bearer']}"
    case.call_and_validate(app=fuzzed_app, headers=headers, checks=ALL_CHECKS, **kwargs)
