"""Hypothesis properties of the token codec, the request schemas and the password policy."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from authsvc.config import Settings
from authsvc.errors import InvalidRefreshToken, InvalidToken, TokenExpired, WeakPassword
from authsvc.schemas import LoginRequest, RefreshRequest, RegisterRequest
from authsvc.security.keys import load_signing_key
from authsvc.security.password_policy import check_password
from authsvc.security.tokens import RefreshClaims, TokenCodec

# AUTHSVC_TEST_PROPERTY_EXAMPLES lowers (or raises) the examples per property; scripts/test
# --fast lowers it.
EXAMPLES = int(os.environ.get("AUTHSVC_TEST_PROPERTY_EXAMPLES", "200"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module", params=["ES256", "EdDSA", "HS256"])
def codec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TokenCodec:
    algorithm: str = request.param
    extra: dict[str, Any] = {"jwt_secret": "k" * 40} if algorithm == "HS256" else {}
    cfg = Settings(  # type: ignore[call-arg]
        _env_file=None, jwt_algorithm=algorithm, data_dir=tmp_path_factory.mktemp("keys"), **extra
    )
    return TokenCodec(cfg, load_signing_key(cfg))


def mutate(token: str, position: int, replacement: str) -> str:
    """Change one character that is not the last of its segment (those may carry only
    base64 padding bits, so some changes decode to the same bytes)."""
    last_of_segment = {i - 1 for i, ch in enumerate(token) if ch == "."} | {len(token) - 1}
    candidates = [i for i in range(len(token)) if token[i] != "." and i not in last_of_segment]
    index = candidates[position % len(candidates)]
    assume(token[index] != replacement)
    return token[:index] + replacement + token[index + 1 :]


uuids = st.uuids().map(str)
b64_chars = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@PROPERTY_SETTINGS
@given(sub=uuids, sid=uuids)
def test_access_token_round_trips(codec: TokenCodec, sub: str, sid: str) -> None:
    token, exp = codec.issue_access_token(user_id=sub, session_id=sid, now=datetime.now(UTC))
    claims = codec.decode_access_token(token)
    assert (claims.sub, claims.sid, claims.exp) == (sub, sid, exp)


@PROPERTY_SETTINGS
@given(sub=uuids, sid=uuids, position=st.integers(min_value=0), replacement=b64_chars)
def test_any_changed_character_invalidates_an_access_token(
    codec: TokenCodec, sub: str, sid: str, position: int, replacement: str
) -> None:
    token, _ = codec.issue_access_token(user_id=sub, session_id=sid, now=datetime.now(UTC))
    with pytest.raises(InvalidToken):
        codec.decode_access_token(mutate(token, position, replacement))


@PROPERTY_SETTINGS
@given(
    sub=uuids,
    sid=uuids,
    jti=st.text(min_size=1, max_size=40),
    iat=st.integers(0, 2**32),
    ttl=st.integers(1, 10**6),
)
def test_refresh_token_round_trips_and_is_deterministic(
    codec: TokenCodec, sub: str, sid: str, jti: str, iat: int, ttl: int
) -> None:
    claims = RefreshClaims(sub=sub, sid=sid, jti=jti, iat=iat, exp=iat + ttl)
    token = codec.issue_refresh_token(claims)
    assert codec.issue_refresh_token(claims) == token
    assert codec.decode_refresh_token(token) == claims
    # Never accepted as the other kind.
    with pytest.raises((InvalidToken, TokenExpired)):
        codec.decode_access_token(token)


@PROPERTY_SETTINGS
@given(sub=uuids, sid=uuids, position=st.integers(min_value=0), replacement=b64_chars)
def test_any_changed_character_invalidates_a_refresh_token(
    codec: TokenCodec, sub: str, sid: str, position: int, replacement: str
) -> None:
    claims = RefreshClaims(sub=sub, sid=sid, jti="j", iat=1, exp=2)
    token = codec.issue_refresh_token(claims)
    with pytest.raises(InvalidRefreshToken):
        codec.decode_refresh_token(mutate(token, position, replacement))


jwt_like = st.lists(
    st.one_of(st.text(max_size=60), st.text(alphabet="ABCDEFabcdef0123456789-_=+/", max_size=80)),
    min_size=1,
    max_size=5,
).map(".".join)


@PROPERTY_SETTINGS
@given(
    token=st.one_of(
        st.text(max_size=300), jwt_like, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    )
)
def test_arbitrary_strings_only_ever_raise_domain_errors(codec: TokenCodec, token: str) -> None:
    with pytest.raises((InvalidToken, TokenExpired)):
        codec.decode_access_token(token)
    with pytest.raises(InvalidRefreshToken):
        codec.decode_refresh_token(token)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "username": st.one_of(
                st.text(max_size=80),
                st.from_regex(r"[A-Za-z0-9._@-]{1,70}", fullmatch=True),
                json_values,
            ),
            "password": st.one_of(st.text(max_size=1100), json_values),
            "refresh_token": st.one_of(st.text(max_size=100), json_values),
            "grant_type": st.one_of(st.just("password"), st.text(max_size=10), json_values),
            "scope": st.one_of(st.text(max_size=50), json_values),
        },
    ),
)


@pytest.mark.parametrize("model", [RegisterRequest, LoginRequest, RefreshRequest])
@PROPERTY_SETTINGS
@given(body=bodies)
def test_request_schemas_accept_only_what_the_contract_allows(
    model: type[BaseModel], body: Any
) -> None:
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        # The error list is what the API returns (minus input): it must be JSON-safe.
        exc.json(include_input=False)
        return
    data = parsed.model_dump()
    if "username" in data:
        username = data["username"]
        assert 3 <= len(username) <= 64
        assert username.isascii()
        assert all(ch.isalnum() or ch in "._@-" for ch in username)
    if "password" in data:
        # /register takes any string and its policy answers the length (weak_password);
        # /login takes what any registered password could be, and bounds the hashing.
        if model is not RegisterRequest:
            assert 1 <= len(data["password"]) <= 1024
        data["password"].encode("utf-8")  # no lone surrogates: argon2 needs bytes
    if data.get("refresh_token") is not None:
        data["refresh_token"].encode("utf-8")


@settings(max_examples=EXAMPLES * 3 // 2, deadline=None)
@given(
    password=st.text(min_size=1, max_size=200),
    username=st.from_regex(r"[a-z0-9._@-]{3,64}", fullmatch=True),
)
def test_password_policy_never_echoes_and_names_a_rule(password: str, username: str) -> None:
    try:
        check_password(password, username=username, min_length=12)
    except WeakPassword as exc:
        # One of the fixed messages, so nothing of the password (or username) is echoed.
        assert exc.detail in {
            "The password must be at least 12 characters long.",
            "The password must be at most 128 characters long.",
            "The password must not contain the username.",
            "The password is too common: it is on a list of breached passwords.",
        }
        return
    assert 12 <= len(password) <= 128
    assert username not in password.lower()
