from __future__ import annotations

import pytest

from authsvc.errors import WeakPassword
from authsvc.security.password_policy import check_password, common_passwords, is_common_password


def test_blocklist_is_large_and_bites_at_the_default_minimum() -> None:
    words = common_passwords()
    assert len(words) >= 10_000
    assert sum(len(w) >= 12 for w in words) >= 300
    assert all(w == w.strip().lower() for w in words)


@pytest.mark.parametrize("password", ["123456", "Password", "  letmein  ", "iloveyou"])
def test_blocklist_matches_case_insensitively_and_trimmed(password: str) -> None:
    assert is_common_password(password)


def test_rules_are_checked_in_order_and_never_echo() -> None:
    for password, rule in [
        ("short", "at least"),
        ("a" * 129, "at most"),
        ("xx-dave-secret-xx", "username"),
        ("password1234", "too common"),
    ]:
        with pytest.raises(WeakPassword) as info:
            check_password(password, username="dave", min_length=12)
        assert rule in info.value.detail
        assert password not in info.value.detail
    check_password("a perfectly fine passphrase", username="dave", min_length=12)
