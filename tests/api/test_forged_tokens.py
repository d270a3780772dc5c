"""Forged and malformed tokens get the contract's 401/403, never a 500: the suite's one
table of forgeries (other modules test the genuine paths).

Each case builds a token from a genuine login (so everything but the one thing it breaks is
right) and presents it to ``GET /me`` and ``POST /introspect`` as an access token, and to
``POST /generateTokens`` (``/refresh`` is its alias) and the token endpoint as a refresh
token. Tokens "signed with our key" are made with the service's own key, read
from the test key directory, to show that each claim is checked and not just the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from httpx import AsyncClient

from authsvc.config import Settings
from authsvc.security.keys import SigningKey, load_signing_key
from authsvc.security.tokens import TokenCodec
from tests.conftest import ClientFactory, bearer, login, register


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT made by hand (PyJWT refuses PEM/DER keys as HMAC secrets, attackers don't)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass
class Genuine:
    """A real login's tokens, their decoded parts, and the service's own keys."""

    access: str
    refresh: str
    access_header: dict[str, Any]
    access_claims: dict[str, Any]
    refresh_header: dict[str, Any]
    refresh_claims: dict[str, Any]
    key: SigningKey
    refresh_key: bytes

    def sign_access(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"typ": "at+jwt", "kid": self.key.kid, **header}
        return jwt.encode(claims, self.key.signer, algorithm=self.key.algorithm, headers=headers)

    def sign_refresh(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"typ": "rt+jwt", "kid": self.refresh_header["kid"], **header}
        return jwt.encode(claims, self.refresh_key, algorithm="HS256", headers=headers)

    def public_pem(self) -> bytes:
        return bytes(
            self.key.verifier.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def public_der(self) -> bytes:
        return bytes(
            self.key.verifier.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def now() -> int:
    return int(time.time())


def without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k != name}


def tamper_segment(token: str, index: int) -> str:
    parts = token.split(".")
    segment = parts[index]
    # Flip a character in the middle (the last one may only carry padding bits).
    middle = len(segment) // 2
    parts[index] = (
        segment[:middle] + ("A" if segment[middle] != "A" else "B") + segment[middle + 1 :]
    )
    return ".".join(parts)


def reheader(token: str, **changes: Any) -> str:
    header_b64, payload_b64, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    return ".".join([b64json({**header, **changes}), payload_b64, signature])


def repayload(token: str, **changes: Any) -> str:
    header_b64, payload_b64, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    return ".".join([header_b64, b64json({**payload, **changes}), signature])


def replace_payload(token: str, payload: dict[str, Any]) -> str:
    header_b64, _, signature = token.split(".")
    return ".".join([header_b64, b64json(payload), signature])


def reverse_signature(token: str) -> str:
    header_b64, payload_b64, signature = token.split(".")
    return ".".join([header_b64, payload_b64, signature[::-1]])


Forge = Callable[[Genuine], str]

# Applies to both token kinds: malformed input.
MALFORMED: dict[str, Callable[[str], str]] = {
    "empty-segments": lambda t: "..",
    "one-segment": lambda t: t.split(".")[0],
    "two-segments": lambda t: ".".join(t.split(".")[:2]),
    "four-segments": lambda t: t + ".AAAA",
    "truncated-signature": lambda t: t[:-10],
    "truncated-half": lambda t: t[: len(t) // 2],
    "signature-stripped": lambda t: t.rsplit(".", 1)[0] + ".",
    "non-base64": lambda t: "!!!.@@@.###",
    "non-base64-payload": lambda t: t.split(".")[0] + ".%%%%." + t.split(".")[2],
    "header-not-json": lambda t: b64(b"not json") + "." + t.split(".", 1)[1],
    "header-json-array": lambda t: b64(b"[1,2]") + "." + t.split(".", 1)[1],
    "payload-not-json": lambda t: t.split(".")[0] + "." + b64(b"\xff\xfe") + "." + t.split(".")[2],
    "payload-json-array": lambda t: t.split(".")[0] + "." + b64(b"[]") + "." + t.split(".")[2],
    "tampered-header": lambda t: tamper_segment(t, 0),
    "tampered-payload": lambda t: tamper_segment(t, 1),
    "tampered-signature": lambda t: tamper_segment(t, 2),
    "non-ascii": lambda t: t[:20] + "é漢字" + t[20:],
    "whitespace-inside": lambda t: t[:30] + " " + t[30:],
    "huge-100kb": lambda t: t + "A" * 100_000,
    "huge-valid-shape": lambda t: b64json({"alg": "ES256"}) + "." + "A" * 100_000 + ".AAAA",
    "just-dots": lambda t: "." * 50,
    "not-a-jwt": lambda t: "hello",
}

ACCESS_FORGERIES: dict[str, tuple[Forge, str]] = {
    "alg-none": (
        lambda g: f"{b64json({**g.access_header, 'alg': 'none'})}.{b64json(g.access_claims)}.",
        "invalid_token",
    ),
    "alg-none-with-signature": (
        lambda g: reheader(g.access, alg="none"),
        "invalid_token",
    ),
    "alg-none-no-kid": (
        lambda g: f"{b64json({'alg': 'none', 'typ': 'at+jwt'})}.{b64json(g.access_claims)}.",
        "invalid_token",
    ),
    "alg-NONE-uppercase": (
        lambda g: f"{b64json({**g.access_header, 'alg': 'NONE'})}.{b64json(g.access_claims)}.",
        "invalid_token",
    ),
    "hs256-with-public-key-pem": (
        lambda g: hs256({**g.access_header, "alg": "HS256"}, g.access_claims, g.public_pem()),
        "invalid_token",
    ),
    "hs256-with-public-key-der": (
        lambda g: hs256({**g.access_header, "alg": "HS256"}, g.access_claims, g.public_der()),
        "invalid_token",
    ),
    "hs256-with-public-jwk": (
        lambda g: hs256(
            {**g.access_header, "alg": "HS256"},
            g.access_claims,
            json.dumps(g.key.public_jwk).encode(),
        ),
        "invalid_token",
    ),
    "rs256-attacker-key-our-kid": (
        lambda g: jwt.encode(
            g.access_claims,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"typ": "at+jwt", "kid": g.key.kid},
        ),
        "invalid_token",
    ),
    "es256-attacker-key-our-kid": (
        lambda g: jwt.encode(
            g.access_claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"typ": "at+jwt", "kid": g.key.kid},
        ),
        "invalid_token",
    ),
    "es384-attacker-key-our-kid": (
        lambda g: jwt.encode(
            g.access_claims,
            ec.generate_private_key(ec.SECP384R1()),
            algorithm="ES384",
            headers={"typ": "at+jwt", "kid": g.key.kid},
        ),
        "invalid_token",
    ),
    "eddsa-attacker-key-our-kid": (
        lambda g: jwt.encode(
            g.access_claims,
            ed25519.Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"typ": "at+jwt", "kid": g.key.kid},
        ),
        "invalid_token",
    ),
    "alg-header-swapped-to-rs256": (lambda g: reheader(g.access, alg="RS256"), "invalid_token"),
    "alg-header-swapped-to-hs256": (lambda g: reheader(g.access, alg="HS256"), "invalid_token"),
    "embedded-jwk-header": (
        lambda g: g.sign_access(g.access_claims, jwk=g.key.public_jwk),
        None,  # our key signed it, so it is valid: a "jwk" header must simply be ignored
    ),
    "jku-header-ignored": (
        lambda g: g.sign_access(g.access_claims, jku="https://attacker.example/jwks.json"),
        None,
    ),
    "payload-swapped-sub": (
        lambda g: repayload(g.access, sub=str(uuid.uuid4())),
        "invalid_token",
    ),
    "payload-replaced": (lambda g: replace_payload(g.access, {"sub": "x"}), "invalid_token"),
    "signature-reversed": (lambda g: reverse_signature(g.access), "invalid_token"),
    "not-base64-anywhere": (lambda g: "###.$$$.%%%", "invalid_token"),
    "unknown-kid": (lambda g: g.sign_access(g.access_claims, kid="not-our-key"), "invalid_token"),
    "missing-kid": (
        lambda g: jwt.encode(
            g.access_claims, g.key.signer, algorithm=g.key.algorithm, headers={"typ": "at+jwt"}
        ),
        "invalid_token",
    ),
    "kid-not-a-string": (lambda g: reheader(g.access, kid=12345), "invalid_token"),
    "kid-a-list": (lambda g: reheader(g.access, kid=["a"]), "invalid_token"),
    "kid-null": (lambda g: reheader(g.access, kid=None), "invalid_token"),
    "typ-jwt": (lambda g: g.sign_access(g.access_claims, typ="JWT"), "invalid_token"),
    "typ-refresh": (lambda g: g.sign_access(g.access_claims, typ="rt+jwt"), "invalid_token"),
    "typ-missing": (
        lambda g: jwt.encode(
            g.access_claims, g.key.signer, algorithm=g.key.algorithm, headers={"kid": g.key.kid}
        ),
        "invalid_token",
    ),
    "wrong-iss": (lambda g: g.sign_access({**g.access_claims, "iss": "evil"}), "invalid_token"),
    "wrong-aud": (lambda g: g.sign_access({**g.access_claims, "aud": "other"}), "invalid_token"),
    "refresh-audience": (
        lambda g: g.sign_access({**g.access_claims, "aud": g.refresh_claims["aud"]}),
        "invalid_token",
    ),
    "aud-list-without-us": (
        lambda g: g.sign_access({**g.access_claims, "aud": ["a", "b"]}),
        "invalid_token",
    ),
    "expired": (
        lambda g: g.sign_access({**g.access_claims, "iat": now() - 7200, "exp": now() - 3600}),
        "token_expired",
    ),
    "nbf-in-future": (
        lambda g: g.sign_access({**g.access_claims, "nbf": now() + 3600}),
        "invalid_token",
    ),
    "iat-in-future": (
        lambda g: g.sign_access({**g.access_claims, "iat": now() + 3600, "exp": now() + 7200}),
        "invalid_token",
    ),
    "exp-a-string": (lambda g: g.sign_access({**g.access_claims, "exp": "never"}), "invalid_token"),
    "iat-a-string": (lambda g: g.sign_access({**g.access_claims, "iat": "today"}), "invalid_token"),
    "sub-an-int": (lambda g: g.sign_access({**g.access_claims, "sub": 1}), "invalid_token"),
    "sub-not-a-uuid": (
        lambda g: g.sign_access({**g.access_claims, "sub": "admin"}),
        "invalid_token",
    ),
    "sub-other-user": (
        lambda g: g.sign_access({**g.access_claims, "sub": str(uuid.uuid4())}),
        "invalid_token",
    ),
    "sid-unknown-session": (
        lambda g: g.sign_access({**g.access_claims, "sid": str(uuid.uuid4())}),
        "invalid_token",
    ),
    "sid-an-object": (lambda g: g.sign_access({**g.access_claims, "sid": {}}), "invalid_token"),
    "sid-nul-byte": (lambda g: g.sign_access({**g.access_claims, "sid": "\x00"}), "invalid_token"),
    "refresh-token-as-access": (lambda g: g.refresh, "invalid_token"),
    "refresh-claims-with-access-header": (
        lambda g: g.sign_access(g.refresh_claims),
        "invalid_token",
    ),
    **{
        f"missing-{claim}": (
            (lambda c: lambda g: g.sign_access(without(g.access_claims, c)))(claim),
            "invalid_token",
        )
        for claim in ("iss", "sub", "aud", "iat", "exp", "jti", "sid")
    },
    **{
        f"malformed-{name}": ((lambda f: lambda g: f(g.access))(fn), "invalid_token")
        for name, fn in MALFORMED.items()
    },
}

REFRESH_FORGERIES: dict[str, Forge] = {
    "alg-none": lambda g: (
        f"{b64json({**g.refresh_header, 'alg': 'none'})}.{b64json(g.refresh_claims)}."
    ),
    "hs256-with-public-key-pem": lambda g: hs256(
        g.refresh_header, g.refresh_claims, g.public_pem()
    ),
    "hs256-with-public-key-der": lambda g: hs256(
        g.refresh_header, g.refresh_claims, g.public_der()
    ),
    "hs256-with-guessable-key": lambda g: hs256(g.refresh_header, g.refresh_claims, b"secret"),
    "hs256-with-another-secret": lambda g: hs256(g.refresh_header, g.refresh_claims, b"k" * 32),
    "sub-swapped-another-secret": lambda g: hs256(
        g.refresh_header, {**g.refresh_claims, "sub": "someone-else"}, b"k" * 32
    ),
    "signature-last-chars": lambda g: g.refresh[:-2] + ("AA" if g.refresh[-2:] != "AA" else "BB"),
    "payload-replaced": lambda g: replace_payload(g.refresh, {"sub": "x"}),
    "es256-attacker-key": lambda g: jwt.encode(
        g.refresh_claims,
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"typ": "rt+jwt", "kid": g.refresh_header["kid"]},
    ),
    "signed-with-access-key": lambda g: jwt.encode(
        g.refresh_claims,
        g.key.signer,
        algorithm=g.key.algorithm,
        headers={"typ": "rt+jwt", "kid": g.refresh_header["kid"]},
    ),
    "payload-swapped-sid": lambda g: repayload(g.refresh, sid=str(uuid.uuid4())),
    "unknown-kid": lambda g: g.sign_refresh(g.refresh_claims, kid="not-our-key"),
    "typ-access": lambda g: g.sign_refresh(g.refresh_claims, typ="at+jwt"),
    "typ-jwt": lambda g: g.sign_refresh(g.refresh_claims, typ="JWT"),
    "wrong-iss": lambda g: g.sign_refresh({**g.refresh_claims, "iss": "evil"}),
    "wrong-aud": lambda g: g.sign_refresh({**g.refresh_claims, "aud": "authsvc"}),
    "unknown-jti-valid-signature": lambda g: g.sign_refresh({**g.refresh_claims, "jti": "fresh"}),
    "expired-unknown": lambda g: g.sign_refresh(
        {**g.refresh_claims, "jti": "x", "exp": now() - 60}
    ),
    "iat-a-string": lambda g: g.sign_refresh({**g.refresh_claims, "iat": "today"}),
    "exp-a-float": lambda g: g.sign_refresh({**g.refresh_claims, "exp": now() + 0.5}),
    "sub-an-int": lambda g: g.sign_refresh({**g.refresh_claims, "sub": 7}),
    "access-token-as-refresh": lambda g: g.access,
    "access-claims-with-refresh-header": lambda g: g.sign_refresh(g.access_claims),
    **{
        f"missing-{claim}": (lambda c: lambda g: g.sign_refresh(without(g.refresh_claims, c)))(
            claim
        )
        for claim in ("iss", "sub", "aud", "iat", "exp", "jti", "sid")
    },
    **{
        f"malformed-{name}": (lambda f: lambda g: f(g.refresh))(fn)
        for name, fn in MALFORMED.items()
        if name != "huge-100kb" and name != "huge-valid-shape"  # over the 64 KiB body cap: 413
    },
}


CHALLENGES = {
    "invalid_token": 'Bearer realm="authsvc", error="invalid_token"',
    "token_expired": 'Bearer realm="authsvc", error="invalid_token", '
    'error_description="The access token expired"',
}


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
async def genuine(client: AsyncClient, settings: Settings) -> Genuine:
    user = await register(client)
    pair = await login(client, user["username"])
    key = load_signing_key(settings)  # the key the app generated in the test key directory
    codec = TokenCodec(settings, key)
    access_header, access_claims = unverified(pair["access_token"])
    refresh_header, refresh_claims = unverified(pair["refresh_token"])
    return Genuine(
        access=pair["access_token"],
        refresh=pair["refresh_token"],
        access_header=access_header,
        access_claims=access_claims,
        refresh_header=refresh_header,
        refresh_claims=refresh_claims,
        key=key,
        refresh_key=codec._refresh_keys[refresh_header["kid"]],
    )


async def test_genuine_tokens_work(client: AsyncClient, genuine: Genuine) -> None:
    assert (await client.get("/me", headers=bearer(genuine.access))).status_code == 200
    response = await client.post("/generateTokens", json={"refresh_token": genuine.refresh})
    assert response.status_code == 200


@pytest.mark.parametrize("case", sorted(ACCESS_FORGERIES))
async def test_forged_access_token_is_refused_at_me(
    client: AsyncClient, genuine: Genuine, case: str
) -> None:
    forge, expected = ACCESS_FORGERIES[case]
    response = await client.get("/me", headers=bearer(forge(genuine)))
    if expected is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 401, response.text
    assert response.json()["error"] == expected
    assert response.headers["WWW-Authenticate"] == CHALLENGES[expected]


async def test_every_forged_access_token_is_inactive_at_introspection(
    make_client: ClientFactory, genuine: Genuine
) -> None:
    # One app for the whole table (a client per case would cost an app start each).
    async with make_client(introspection_clients="gateway:s3cret-gateway") as gateway:

        async def introspect(token: str) -> Any:
            response = await gateway.post(
                "/introspect", data={"token": token}, auth=("gateway", "s3cret-gateway")
            )
            assert response.status_code == 200, response.text
            return response.json()

        assert (await introspect(genuine.access))["active"] is True
        for case, (forge, expected) in sorted(ACCESS_FORGERIES.items()):
            # Not here: the two over the 64 KiB body cap (413 before anything reads them), and
            # a genuine refresh token, which introspection describes too (RFC 7662).
            skip = case.startswith("malformed-huge") or case == "refresh-token-as-access"
            if expected is not None and not skip:
                assert await introspect(forge(genuine)) == {"active": False}, case


@pytest.mark.parametrize("case", sorted(REFRESH_FORGERIES))
async def test_forged_refresh_token_is_refused(
    client: AsyncClient, genuine: Genuine, case: str
) -> None:
    token = REFRESH_FORGERIES[case](genuine)
    response = await client.post("/generateTokens", json={"refresh_token": token})
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "invalid_refresh_token"
    # The genuine token was not consumed by the forgery.
    assert (
        await client.post("/refresh", json={"refresh_token": genuine.refresh})
    ).status_code == 200


@pytest.mark.parametrize("case", sorted(REFRESH_FORGERIES))
async def test_forged_refresh_token_is_an_invalid_grant_at_the_token_endpoint(
    client: AsyncClient, genuine: Genuine, case: str
) -> None:
    token = REFRESH_FORGERIES[case](genuine)
    response = await client.post(
        "/login", data={"grant_type": "refresh_token", "refresh_token": token}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    # The genuine token was not consumed by the forgery.
    assert (
        await client.post(
            "/login", data={"grant_type": "refresh_token", "refresh_token": genuine.refresh}
        )
    ).status_code == 200


@pytest.mark.parametrize("case", ["huge-100kb", "huge-valid-shape"])
async def test_huge_refresh_token_body_is_refused_before_parsing(
    client: AsyncClient, genuine: Genuine, case: str
) -> None:
    response = await client.post(
        "/generateTokens", json={"refresh_token": MALFORMED[case](genuine.refresh)}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize(
    "case", ["alg-none", "typ-access", "malformed-non-ascii", "access-token-as-refresh"]
)
async def test_forged_refresh_cookie_is_refused(
    client: AsyncClient, genuine: Genuine, case: str
) -> None:
    token = REFRESH_FORGERIES[case](genuine)
    response = await client.post(
        "/generateTokens", headers={"Cookie": b"authsvc_refresh=" + token.encode("utf-8")}
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "invalid_refresh_token"


async def test_huge_refresh_cookie_is_invalid(client: AsyncClient, genuine: Genuine) -> None:
    response = await client.post(
        "/generateTokens", headers={"Cookie": "authsvc_refresh=" + genuine.refresh + "A" * 100_000}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_refresh_token"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc", "bearer"],
)
async def test_missing_or_non_bearer_credentials(
    client: AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "EdDSA"])
async def test_other_configured_algorithms_refuse_cross_algorithm_tokens(
    make_client: Any, make_settings: Any, genuine: Genuine, algorithm: str
) -> None:
    # A service configured for another algorithm must not accept the ES256 service's token,
    # nor an HS256 token signed with its own public key (PEM, DER or JWK) under its kid.
    overrides: dict[str, Any] = {"jwt_algorithm": algorithm}
    if algorithm == "HS256":
        overrides["jwt_secret"] = "s" * 48
    async with make_client(**overrides) as other:
        response = await other.get("/me", headers=bearer(genuine.access))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        key = load_signing_key(make_settings(**overrides))
        pair = await login(other, (await register(other))["username"])
        _, claims = unverified(pair["access_token"])
        public_forms = [json.dumps(key.public_jwk).encode()]
        if algorithm != "HS256":
            for encoding, fmt in [
                (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
            ]:
                public_forms.append(key.verifier.public_bytes(encoding, fmt))
        for public in public_forms:
            forged = hs256({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}, claims, public)
            response = await other.get("/me", headers=bearer(forged))
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_token"
        assert (await other.get("/me", headers=bearer(pair["access_token"]))).status_code == 200
