"""The username rule, in one place: 3 to 64 ASCII letters, digits and ``. _ - @``, and
case-insensitive everywhere, so a username is stored, looked up, throttled and logged in its
normalised (lower-case) form (README, *Walk-through with curl*; the docs page's schema).

The HTTP bodies validate with ``Username``, the command line with ``is_valid_username``; every
store and lookup goes through ``normalize_username``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StringConstraints

MIN_LENGTH = 3
MAX_LENGTH = 64
PATTERN = r"^[A-Za-z0-9._@-]+$"
RULE = f"{MIN_LENGTH} to {MAX_LENGTH} ASCII letters, digits and `. _ - @`; case-insensitive."

_USERNAME = re.compile(PATTERN)

Username = Annotated[
    str,
    StringConstraints(min_length=MIN_LENGTH, max_length=MAX_LENGTH, pattern=PATTERN),
    Field(description=RULE, examples=["alice"]),
]


def is_valid_username(username: str) -> bool:
    """Whether ``username`` follows the rule (``Username`` accepts exactly these)."""
    return MIN_LENGTH <= len(username) <= MAX_LENGTH and _USERNAME.fullmatch(username) is not None


def normalize_username(username: str) -> str:
    """The form a username is stored and compared in: usernames are case-insensitive."""
    return username.lower()
