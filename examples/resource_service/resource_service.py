"""An example resource service that accepts authsvc access tokens.

It trusts nothing but authsvc's public keys at ``/.well-known/jwks.json``: no shared secret,
no database, no call to authsvc per request. Each token is checked for

* the ``typ: at+jwt`` header (RFC 9068), so an authsvc refresh token is refused;
* a signature by a key in the JWKS, chosen by ``kid`` and verified with the one pinned
  algorithm (never the token's ``alg``: no ``none``, no HMAC-with-the-public-key);
* ``iss``, ``aud`` and ``exp`` (with a small leeway for clock skew) and the other claims
  authsvc always sets.

The JWKS is fetched once and cached (``PyJWKClient``); a token signed with a key the cache
does not know yet (authsvc rotated its key) makes it fetch the set again, at most once per
cooldown period. A logged-out session's access token stays valid here until it expires
(minutes); a service that must know sooner asks authsvc's ``/introspect``.

Run it: ``RESOURCE_JWKS_URL=http://127.0.0.1:8000/.well-known/jwks.json
uvicorn --factory resource_service:create_app --port 9000``.
"""

# No ``from __future__ import annotations``: FastAPI must resolve the dependencies declared
# inside create_app, which string annotations would hide.
import os
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti", "sid"]


@dataclass(frozen=True)
class VerifierConfig:
    jwks_url: str
    issuer: str = "authsvc"
    audience: str = "authsvc"
    algorithm: str = "ES256"  # authsvc's AUTHSVC_JWT_ALGORITHM
    leeway_seconds: float = 10
    jwks_cache_seconds: float = 300  # how long a fetched key set is trusted as complete
    unknown_kid_cooldown_seconds: float = 30  # at most one forced refetch per period

    @classmethod
    def from_env(cls) -> "VerifierConfig":
        return cls(
            jwks_url=os.environ.get(
                "RESOURCE_JWKS_URL", "http://127.0.0.1:8000/.well-known/jwks.json"
            ),
            issuer=os.environ.get("RESOURCE_ISSUER", "authsvc"),
            audience=os.environ.get("RESOURCE_AUDIENCE", "authsvc"),
            algorithm=os.environ.get("RESOURCE_ALGORITHM", "ES256"),
        )


class TokenRejected(Exception):
    """The bearer token is not an acceptable access token (always a 401)."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched (a 503: our problem, not the client's)."""


class AccessTokenVerifier:
    def __init__(self, config: VerifierConfig) -> None:
        self._config = config
        self._jwks = jwt.PyJWKClient(
            config.jwks_url,
            cache_jwk_set=True,
            lifespan=config.jwks_cache_seconds,
            cooldown_duration=config.unknown_kid_cooldown_seconds,
            timeout=5,
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of an authsvc access token; ``TokenRejected`` otherwise.

        Blocking (it may fetch the JWKS): call it from a thread, as FastAPI does for a
        plain ``def`` dependency.
        """
        config = self._config
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != "at+jwt" or not isinstance(header.get("kid"), str):
                raise TokenRejected("not an access token")
            signing_key = self._jwks.get_signing_key(header["kid"])
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=[config.algorithm],  # pinned; the header's alg is never trusted
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise KeysUnavailable() from exc
        except (jwt.PyJWTError, ValueError) as exc:  # PyJWKClientError (unknown kid) included
            raise TokenRejected(type(exc).__name__) from None
        return claims


def _unauthorized(error: str) -> JSONResponse:
    header = (
        'Bearer realm="resource"'
        if error == "not_authenticated"
        else ('Bearer realm="resource", error="invalid_token"')
    )
    return JSONResponse(
        {"error": error, "detail": "A valid authsvc access token is required."},
        status_code=401,
        headers={"WWW-Authenticate": header},
    )


def create_app(config: VerifierConfig | None = None) -> FastAPI:
    verifier = AccessTokenVerifier(config or VerifierConfig.from_env())
    bearer = HTTPBearer(auto_error=False)
    app = FastAPI(title="example resource service")

    def current_claims(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> dict[str, Any]:
        # A plain ``def``: FastAPI runs it in a thread, so a JWKS fetch never blocks the loop.
        if credentials is None:
            raise TokenRejected("not_authenticated")
        return verifier.verify(credentials.credentials)

    @app.exception_handler(TokenRejected)
    async def _rejected(_request: Request, exc: Exception) -> JSONResponse:
        missing = str(exc) == "not_authenticated"
        return _unauthorized("not_authenticated" if missing else "invalid_token")

    @app.exception_handler(KeysUnavailable)
    async def _unavailable(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": "service_unavailable", "detail": "The token issuer's keys are unreachable."},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/hello")
    def hello(claims: Annotated[dict[str, Any], Depends(current_claims)]) -> dict[str, str]:
        return {"message": "hello", "user_id": claims["sub"], "session_id": claims["sid"]}

    return app
