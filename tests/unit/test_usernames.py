"""The one username rule: 3 to 64 ASCII letters, digits and ``. _ - @``, case-insensitive. The
HTTP bodies and the command line accept exactly the same names and normalise them alike."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from authsvc.cli import check_username
from authsvc.schemas import LoginRequest, RegisterRequest
from authsvc.security.usernames import is_valid_username, normalize_username

VALID = ["abc", "alice", "Alice", "ALICE.smith", "a_b", "x-y@z.io", "0.1", "a" * 64, "@@@"]
INVALID = [
    "",
    "ab",
    "a" * 65,
    "al ice",
    "alice\n",
    "\nalice",
    "alice!",
    "al/ice",
    "ålice",
    "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth "alice"
    "\u212aelvin",  # the Kelvin sign lower-cases to an ASCII "k": validate before normalising
    "alice\x00",
]


def api_username(name: str) -> str | None:
    """The username the API's bodies take from ``name``, or ``None`` if they refuse it."""
    try:
        register = RegisterRequest.model_validate({"username": name, "password": "p"})
        login = LoginRequest.model_validate({"username": name, "password": "p"})
    except ValidationError as exc:
        assert {e["loc"] for e in exc.errors()} == {("username",)}
        return None
    assert register.username == login.username == name
    return name


def cli_username(name: str) -> str | None:
    """The username the command line takes from ``name``, or ``None`` if it refuses it."""
    try:
        return check_username(name)
    except SystemExit as exc:
        assert exc.code == 2
        return None


@pytest.mark.parametrize("name", VALID)
def test_valid_names_are_accepted_everywhere_and_normalised_alike(name: str) -> None:
    assert is_valid_username(name)
    assert api_username(name) == name
    assert cli_username(name) == normalize_username(name) == name.lower()


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_are_refused_everywhere(name: str) -> None:
    assert not is_valid_username(name)
    assert api_username(name) is None
    assert cli_username(name) is None


def test_the_command_line_refusal_states_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_username("a b") is None
    assert capsys.readouterr().err == (
        "authsvc: error: the username must be 3-64 ASCII letters, digits or . _ - @\n"
    )


def test_normalising_lower_cases_ascii_and_is_idempotent() -> None:
    assert normalize_username("Alice.Smith-1@EXAMPLE.org") == "alice.smith-1@example.org"
    assert normalize_username("bob_2") == "bob_2"
    for name in VALID:
        once = normalize_username(name)
        assert normalize_username(once) == once
        assert is_valid_username(once)
        assert normalize_username(name.upper()) == normalize_username(name.lower())


names = st.text(
    alphabet=st.sampled_from("aZ09._@- \n/!\x00å\u212a") | st.characters(), min_size=0, max_size=70
) | st.from_regex(r"[A-Za-z0-9._@-]{1,70}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(name=names)
def test_the_command_line_and_the_api_agree_on_every_name(name: str) -> None:
    api = api_username(name)
    assert (api is not None) == is_valid_username(name)
    assert cli_username(name) == (normalize_username(api) if api is not None else None)
