"""Signing keys: loading, development generation under ``./var/``, RFC 7638 thumbprints."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authsvc.config import MIN_HMAC_SECRET_BYTES, Settings

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


class KeyConfigError(Exception):
    """A configured key is missing, unreadable or does not fit the algorithm."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    """One key: what signs (private key or HMAC secret), what verifies, and its ``kid``."""

    algorithm: str
    kid: str
    signer: Any = field(repr=False)
    verifier: Any = field(repr=False)
    public_jwk: dict[str, Any] | None
    # Bytes that only the holder of the key knows; refresh-token HMAC keys derive from it.
    secret_material: bytes = field(repr=False)

    @classmethod
    def from_private_key(cls, algorithm: str, private_key: PrivateKey) -> SigningKey:
        _check_key_fits(algorithm, private_key)
        public = private_key.public_key()
        jwk: dict[str, Any]
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        kid = jwk_thumbprint(jwk)
        jwk = {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}
        material = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(algorithm, kid, private_key, public, jwk, material)

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKey:
        if len(secret) < MIN_HMAC_SECRET_BYTES:
            raise KeyConfigError(f"the HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        kid = jwk_thumbprint_oct(secret)
        return cls("HS256", kid, secret, secret, None, secret)


def jwk_thumbprint_oct(secret: bytes) -> str:
    canonical = json.dumps({"k": b64url(secret), "kty": "oct"}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def _check_key_fits(algorithm: str, key: PrivateKey) -> None:
    ok = (
        (
            algorithm == "ES256"
            and isinstance(key, ec.EllipticCurvePrivateKey)
            and isinstance(key.curve, ec.SECP256R1)
        )
        or (algorithm == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey))
        or (algorithm == "RS256" and isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048)
    )
    if not ok:
        raise KeyConfigError(f"the private key does not fit {algorithm}")


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise KeyConfigError(f"cannot generate a key for {algorithm}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key_file(path: Path, algorithm: str) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise KeyConfigError(f"{path} holds an unsupported key type")
    return SigningKey.from_private_key(algorithm, key)


def _create_exclusively(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` unless it exists; safe when several processes race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process got there first
            os.link(tmp, path)  # atomic
    finally:
        tmp.unlink(missing_ok=True)


def development_key_path(settings: Settings) -> Path:
    suffix = "secret" if settings.tokens.jwt_algorithm == "HS256" else "pem"
    return settings.operations.data_dir / f"jwt-{settings.tokens.jwt_algorithm.lower()}.{suffix}"


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured key, or in development one generated on first start and reused."""
    if settings.tokens.jwt_algorithm == "HS256":
        if settings.tokens.jwt_secret is not None:
            return SigningKey.from_secret(settings.tokens.jwt_secret.get_secret_value().encode())
        path = development_key_path(settings)
        if not path.exists():
            _create_exclusively(path, b64url(secrets.token_bytes(48)).encode() + b"\n")
        return SigningKey.from_secret(path.read_bytes().strip())
    if settings.tokens.jwt_private_key_file is not None:
        return load_private_key_file(
            settings.tokens.jwt_private_key_file, settings.tokens.jwt_algorithm
        )
    if settings.operations.env == "production":
        raise KeyConfigError("AUTHSVC_ENV=production requires AUTHSVC_JWT_PRIVATE_KEY_FILE")
    path = development_key_path(settings)
    if not path.exists():
        _create_exclusively(
            path, private_key_pem(generate_private_key(settings.tokens.jwt_algorithm))
        )
    return load_private_key_file(path, settings.tokens.jwt_algorithm)


def load_previous_keys(settings: Settings) -> list[SigningKey]:
    """The keys of ``AUTHSVC_JWT_PREVIOUS_KEY_FILES``: they verify, they never sign.

    Rotation: make the new key current (``AUTHSVC_JWT_PRIVATE_KEY_FILE``) and list the old
    one here. Its public key stays in the JWKS, and tokens it signed (access tokens, and
    refresh tokens, whose HMAC key derives from it) keep working by ``kid``.
    """
    if not settings.tokens.jwt_previous_key_files:
        return []
    if settings.tokens.jwt_algorithm == "HS256":
        raise KeyConfigError(
            "AUTHSVC_JWT_PREVIOUS_KEY_FILES holds PEM keys; it is not used with HS256"
        )
    return [
        load_private_key_file(Path(name), settings.tokens.jwt_algorithm)
        for name in settings.tokens.jwt_previous_key_files
    ]
