from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from authsvc.config import Settings
from authsvc.errors import InvalidRefreshToken, InvalidToken, TokenExpired
from authsvc.security.keys import (
    KeyConfigError,
    SigningKey,
    generate_private_key,
    jwk_thumbprint,
    load_signing_key,
)
from authsvc.security.tokens import RefreshClaims, TokenCodec


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[arg-type, call-arg]


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 §3.1: the example RSA key and its thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
            "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
            "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
            "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_development_key_is_generated_once_and_reused(tmp_path: Path) -> None:
    first = load_signing_key(settings(tmp_path))
    second = load_signing_key(settings(tmp_path))
    assert first.kid == second.kid
    [pem] = tmp_path.glob("*.pem")
    assert pem.stat().st_mode & 0o077 == 0  # private to its owner


def test_key_must_fit_the_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "ed.pem"
    from authsvc.security.keys import private_key_pem

    path.write_bytes(private_key_pem(generate_private_key("EdDSA")))
    with pytest.raises(KeyConfigError, match="does not fit ES256"):
        load_signing_key(settings(tmp_path, jwt_private_key_file=path))


def test_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot read"):
        load_signing_key(settings(tmp_path, jwt_private_key_file=tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(KeyConfigError, match="not an unencrypted PEM private key"):
        load_signing_key(settings(tmp_path, jwt_private_key_file=garbage))


def codec(tmp_path: Path, **values: object) -> TokenCodec:
    s = settings(tmp_path, **values)
    return TokenCodec(s, load_signing_key(s))


def test_access_token_round_trip(tmp_path: Path) -> None:
    c = codec(tmp_path)
    token, exp = c.issue_access_token(user_id="u1", session_id="s1", now=datetime.now(UTC))
    claims = c.decode_access_token(token)
    assert (claims.sub, claims.sid, claims.exp) == ("u1", "s1", exp)


def test_expired_access_token_and_leeway(tmp_path: Path) -> None:
    past = datetime.fromtimestamp(datetime.now(UTC).timestamp() - 1810, UTC)  # expired 10 s ago
    token, _ = codec(tmp_path).issue_access_token(user_id="u", session_id="s", now=past)
    with pytest.raises(TokenExpired):
        codec(tmp_path).decode_access_token(token)
    assert codec(tmp_path, clock_skew_seconds=60).decode_access_token(token).sub == "u"


def test_over_long_tokens_are_rejected_before_parsing(tmp_path: Path) -> None:
    with pytest.raises(InvalidToken):
        codec(tmp_path).decode_access_token("a" * 100_000)
    with pytest.raises(InvalidRefreshToken):
        codec(tmp_path).decode_refresh_token("a" * 100_000)


def test_refresh_tokens_are_deterministic_and_keyed(tmp_path: Path) -> None:
    c = codec(tmp_path)
    claims = RefreshClaims(
        sub="u", sid="s", jti=c.successor_jti("ab" * 32), iat=1_700_000_000, exp=1_700_003_600
    )
    assert c.issue_refresh_token(claims) == c.issue_refresh_token(claims)
    assert c.decode_refresh_token(c.issue_refresh_token(claims)) == claims
    other = codec(tmp_path / "other")  # another signing key derives another refresh key
    assert other.successor_jti("ab" * 32) != c.successor_jti("ab" * 32)
    with pytest.raises(InvalidRefreshToken):
        other.decode_refresh_token(c.issue_refresh_token(claims))


def test_previous_keys_still_verify(tmp_path: Path) -> None:
    s = settings(tmp_path)
    old = SigningKey.from_private_key("ES256", generate_private_key("ES256"))
    new = SigningKey.from_private_key("ES256", generate_private_key("ES256"))
    token, _ = TokenCodec(s, old).issue_access_token(
        user_id="u", session_id="s", now=datetime.now(UTC)
    )
    rotated = TokenCodec(s, new, previous_keys=[old])
    assert rotated.decode_access_token(token).sub == "u"
    assert {k["kid"] for k in rotated.jwks()["keys"]} == {old.kid, new.kid}
    with pytest.raises(InvalidToken):
        TokenCodec(s, new).decode_access_token(token)
