"""The password policy of API.md: length, no username inside, not a common password."""

from __future__ import annotations

from authsvc.errors import WeakPassword

MAX_PASSWORD_LENGTH = 128


def check_password(password: str, *, username: str, min_length: int) -> None:
    """Raise ``WeakPassword`` naming the first rule ``password`` breaks (never echoing it)."""
    if len(password) < min_length:
        raise WeakPassword(f"The password must be at least {min_length} characters long.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.")
    if username.lower() in password.lower():
        raise WeakPassword("The password must not contain the username.")
