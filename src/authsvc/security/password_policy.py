"""The password policy (README, *Abuse resistance*): length, no username inside, not a
common password.

The blocklist ships as package data (``data/common-passwords.txt.gz``, 40,101 passwords;
``data/README.md`` names its sources and licences) and is read once, on first use.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib.resources import files

from authsvc.errors import WeakPassword

MAX_PASSWORD_LENGTH = 128
BLOCKLIST_RESOURCE = "common-passwords.txt.gz"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped blocklist, lower-cased."""
    raw = files("authsvc.security").joinpath("data").joinpath(BLOCKLIST_RESOURCE).read_bytes()
    return frozenset(line for line in gzip.decompress(raw).decode("utf-8").splitlines() if line)


def is_common_password(password: str) -> bool:
    """Whether ``password`` is on the blocklist (compared case-insensitively, trimmed)."""
    return password.strip().lower() in common_passwords()


def check_password(password: str, *, username: str, min_length: int) -> None:
    """Raise ``WeakPassword`` naming the first rule ``password`` breaks (never echoing it).

    Length counts characters (code points), and the whole password is hashed: nothing is
    truncated, so the 128-character maximum is a refusal, never a cut.
    """
    if len(password) < min_length:
        raise WeakPassword(f"The password must be at least {min_length} characters long.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.")
    if username.lower() in password.lower():
        raise WeakPassword("The password must not contain the username.")
    if is_common_password(password):
        raise WeakPassword("The password is too common: it is on a list of breached passwords.")
