"""The one place that issues and checks JWTs (PyJWT).

Access tokens follow RFC 9068 (``typ: at+jwt``) and are signed with the configured key and
algorithm. Refresh tokens are JWTs of their own type and audience, signed with HS256 under
a key derived (HKDF) from the signing key's private material: HMAC is deterministic, so a
rotation's successor token can be derived again, byte for byte, from the consumed row (the
grace window returns the *same* token without the database ever storing a usable one).
A second derived key makes the keyed hashes the database stores instead of the client
addresses users log in from (see ``address_digests``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authsvc.config import Settings
from authsvc.errors import InvalidRefreshToken, InvalidToken, TokenExpired
from authsvc.security.keys import SigningKey, b64url

ACCESS_TOKEN_TYPE = "at+jwt"
REFRESH_TOKEN_TYPE = "rt+jwt"
REFRESH_ALGORITHM = "HS256"
# Longer than any token this service issues (an RS256 access token is about 800 bytes).
MAX_TOKEN_LENGTH = 4096
_ACCESS_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti", "sid"]
_REFRESH_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti", "sid"]


def token_hash(token: str) -> str:
    """SHA-256 of a token, hex: what the database stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _derive_key(material: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(material)


def _derive_refresh_key(material: bytes) -> bytes:
    return _derive_key(material, b"authsvc refresh-token v1")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    sub: str
    sid: str
    jti: str
    iat: int
    exp: int


class TokenCodec:
    """Signs and verifies access and refresh tokens.

    The algorithm is never read from a token: each ``kid`` maps to one of our keys and
    that key's algorithm is the only one PyJWT may use, which rules out ``alg: none`` and
    HMAC-with-the-public-key forgeries.
    """

    def __init__(
        self,
        settings: Settings,
        signing_key: SigningKey,
        previous_keys: Iterable[SigningKey] = (),
    ) -> None:
        self._issuer = settings.tokens.issuer
        self._audience = settings.tokens.audience
        self._refresh_audience = f"{settings.tokens.audience}#refresh"
        self._access_ttl = settings.tokens.access_token_ttl_seconds
        self._leeway = settings.tokens.clock_skew_seconds
        self.signing_key = signing_key
        self._keys: dict[str, SigningKey] = {k.kid: k for k in previous_keys}
        self._keys[signing_key.kid] = signing_key
        self._refresh_keys = {
            kid: _derive_refresh_key(k.secret_material) for kid, k in self._keys.items()
        }
        self._address_keys = [
            _derive_key(self._keys[kid].secret_material, b"authsvc known-address v1")
            for kid in self.refresh_kids
        ]

    @property
    def refresh_audience(self) -> str:
        """The ``aud`` of refresh tokens (never the access tokens' audience)."""
        return self._refresh_audience

    # -- access tokens -------------------------------------------------------------------

    def issue_access_token(
        self, *, user_id: str, session_id: str, now: datetime
    ) -> tuple[str, int]:
        iat = int(now.timestamp())
        exp = iat + self._access_ttl
        claims = {
            "iss": self._issuer,
            "sub": user_id,
            "aud": self._audience,
            "iat": iat,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
            "sid": session_id,
        }
        key = self.signing_key
        token = jwt.encode(
            claims,
            key.signer,
            algorithm=key.algorithm,
            headers={"typ": ACCESS_TOKEN_TYPE, "kid": key.kid},
        )
        return token, exp

    def decode_access_token(self, token: str) -> AccessClaims:
        """Verify an access token; raises ``TokenExpired`` or ``InvalidToken``."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken()
        try:
            header = _unverified_header(token)
            key = self._keys.get(header.get("kid"))  # type: ignore[arg-type]
            if key is None:
                raise InvalidToken()
            decoded = jwt.decode_complete(
                token,
                key.verifier,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _ACCESS_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except (jwt.PyJWTError, ValueError, TypeError, UnicodeError):
            raise InvalidToken() from None
        if decoded["header"].get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken()
        payload = decoded["payload"]
        if not all(isinstance(payload[c], str) for c in ("sub", "sid", "jti")):
            raise InvalidToken()
        return AccessClaims(
            payload["sub"], payload["sid"], payload["jti"], payload["iat"], payload["exp"], payload
        )

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys that verify access tokens (none for an HMAC algorithm)."""
        return {"keys": [k.public_jwk for k in self._keys.values() if k.public_jwk is not None]}

    # -- refresh tokens ------------------------------------------------------------------

    def new_refresh_jti(self) -> str:
        return secrets.token_urlsafe(16)

    @property
    def refresh_kids(self) -> list[str]:
        """Every ``kid`` a refresh token may carry: the current key's first, then previous ones."""
        return [self.signing_key.kid, *(kid for kid in self._keys if kid != self.signing_key.kid)]

    def successor_jti(self, consumed_hash: str, kid: str | None = None) -> str:
        """The ``jti`` of the token that replaces the one whose hash is ``consumed_hash``.

        Only the holder of the refresh key can compute it, and the database holds neither
        the key nor any token, so the stored rows alone do not yield a usable token.
        """
        key = self._refresh_keys[kid or self.signing_key.kid]
        return b64url(
            hmac.new(key, b"successor:" + consumed_hash.encode(), hashlib.sha256).digest()[:16]
        )

    def address_digests(self, address: str) -> list[str]:
        """Keyed hashes (HMAC-SHA256, hex) of a client address: what the database keeps of
        the addresses users log in from. One per key, the current key's first, so that
        addresses recorded before a key rotation are still recognised."""
        return [
            hmac.new(key, address.encode(), hashlib.sha256).hexdigest()
            for key in self._address_keys
        ]

    def issue_refresh_token(self, claims: RefreshClaims, kid: str | None = None) -> str:
        """Deterministic: the same claims (and ``kid``; default: the current key's) always
        give the same token."""
        kid = kid or self.signing_key.kid
        payload = {
            "iss": self._issuer,
            "sub": claims.sub,
            "aud": self._refresh_audience,
            "iat": claims.iat,
            "exp": claims.exp,
            "jti": claims.jti,
            "sid": claims.sid,
        }
        return jwt.encode(
            payload,
            self._refresh_keys[kid],
            algorithm=REFRESH_ALGORITHM,
            headers={"typ": REFRESH_TOKEN_TYPE, "kid": kid},
        )

    def decode_refresh_token(self, token: str) -> RefreshClaims:
        """Verify a refresh token's signature, type and audience, but not its expiry.

        Expiry is judged by the service against the database, because presenting an
        already-rotated token must be reported as reuse even when it has also expired.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidRefreshToken()
        try:
            header = _unverified_header(token)
            key = self._refresh_keys.get(header.get("kid"))  # type: ignore[arg-type]
            if key is None or header.get("typ") != REFRESH_TOKEN_TYPE:
                raise InvalidRefreshToken()
            payload = jwt.decode(
                token,
                key,
                algorithms=[REFRESH_ALGORITHM],
                audience=self._refresh_audience,
                issuer=self._issuer,
                options={"require": _REFRESH_CLAIMS, "verify_exp": False, "verify_iat": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError, UnicodeError):
            raise InvalidRefreshToken() from None
        if not all(isinstance(payload[c], str) for c in ("sub", "sid", "jti")):
            raise InvalidRefreshToken()
        if not all(isinstance(payload[c], int) for c in ("iat", "exp")):
            raise InvalidRefreshToken()
        return RefreshClaims(
            payload["sub"], payload["sid"], payload["jti"], payload["iat"], payload["exp"]
        )


_BASE64URL = re.compile(r"[A-Za-z0-9_-]{1,1024}")


def _unverified_header(token: str) -> dict[str, Any]:
    """A token's header, only to pick the key that PyJWT then verifies the whole token with
    (header included). ``jwt.get_unverified_header`` would parse and check every segment of
    the token a second time: a fifth of a bearer check's CPU."""
    segment = token.partition(".")[0]
    if not _BASE64URL.fullmatch(segment):
        raise jwt.DecodeError("invalid header")
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(header, dict):
        raise jwt.DecodeError("invalid header")
    return header
