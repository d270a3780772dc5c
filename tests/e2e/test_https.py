"""``authsvc serve --ssl-certfile --ssl-keyfile``: the real server over TLS (certificates from
a throwaway CA made by ``trustme``), HSTS, ``Secure`` cookies, and a standard OAuth2 client
(Authlib) logging in, refreshing by itself and revoking over HTTPS."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from cryptography.hazmat.primitives import serialization

from tests.conftest import PASSWORD, bearer, unique_username
from tests.e2e.conftest import ServerFactory
from tests.e2e.processes import FAST_HASH_ENV, run_cli

pytestmark = pytest.mark.slow

ONE_YEAR = 365 * 24 * 3600
ACCESS_TTL = 4


@dataclass
class Tls:
    certfile: Path
    keyfile: Path
    client_context: ssl.SSLContext
    ca: trustme.CA

    @property
    def args(self) -> list[str]:
        return ["--ssl-certfile", str(self.certfile), "--ssl-keyfile", str(self.keyfile)]


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    certfile, keyfile = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    certfile.parent.mkdir()
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Tls(certfile, keyfile, context, ca)


def hsts_max_age(response: httpx.Response) -> int:
    match = re.fullmatch(r"max-age=(\d+)", response.headers.get("strict-transport-security", ""))
    assert match, dict(response.headers)
    return int(match[1])


def test_serve_over_tls_with_hsts_and_secure_cookies(
    run_server: ServerFactory, tls: Tls, tmp_path: Path
) -> None:
    # Secure cookies stay on (the default): over TLS they work as in production.
    env = {
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tls.db'}",
        "AUTHSVC_DATA_DIR": str(tmp_path / "var"),
        **FAST_HASH_ENV,
    }
    server = run_server(env=env, args=[*tls.args, "--workers", "2"], verify=tls.client_context)
    assert server.url.startswith("https://127.0.0.1:")
    assert f"running on https://127.0.0.1:{server.port}" in server.output()

    with httpx.Client(base_url=server.url, verify=tls.client_context, timeout=30) as http:
        for path in ("/healthz", "/no-such-path", "/docs"):
            response = http.get(path)
            assert hsts_max_age(response) >= ONE_YEAR, path
        username = unique_username("tls")
        body = {"username": username, "password": PASSWORD}
        assert http.post("/register", json=body).status_code == 201
        login = http.post("/login", params={"transport": "cookie"}, json=body)
        assert login.status_code == 200, login.text
        assert hsts_max_age(login) >= ONE_YEAR
        cookie = login.headers["set-cookie"]
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # The client's jar sends a Secure cookie over HTTPS only; this one is.
        refreshed = http.post("/refresh")
        assert refreshed.status_code == 200, refreshed.text
        assert "refresh_token" not in refreshed.json()
        me = http.get("/me", headers=bearer(refreshed.json()["access_token"]))
        assert me.json()["username"] == username

    # Nothing is served in the clear on that port.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    # A client that does not trust the CA is refused by its own TLS check.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/healthz", timeout=10)

    server.stop()
    assert server.stopped_cleanly(), server.output()


def test_standard_oauth2_client_over_tls(
    run_server: ServerFactory, tls: Tls, tmp_path: Path
) -> None:
    env = {
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'oauth.db'}",
        "AUTHSVC_DATA_DIR": str(tmp_path / "var"),
        "AUTHSVC_ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL),
        **FAST_HASH_ENV,
    }
    server = run_server(env=env, args=tls.args, verify=tls.client_context)
    username = unique_username("tls")
    with httpx.Client(base_url=server.url, verify=tls.client_context, timeout=30) as http:
        body = {"username": username, "password": PASSWORD}
        assert http.post("/register", json=body).status_code == 201
        metadata = http.get("/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint"] == f"{server.url}/login"

    updates: list[str | None] = []
    with OAuth2Client(
        client_id="a-public-client",
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
        token_endpoint=metadata["token_endpoint"],
        update_token=lambda token, refresh_token=None: updates.append(refresh_token),
        leeway=1,
        verify=tls.client_context,
        base_url=server.url,
        timeout=30,
    ) as oauth:
        first = oauth.fetch_token(metadata["token_endpoint"], username=username, password=PASSWORD)
        assert oauth.get("/me").json()["username"] == username
        time.sleep(max(0.0, first["expires_at"] - time.time()) + 1.1)
        me = oauth.get("/me")  # refreshes first, by itself
        assert me.status_code == 200, me.text
        assert updates == [first["refresh_token"]]
        assert oauth.token["refresh_token"] != first["refresh_token"]

        revoked = oauth.revoke_token(
            metadata["revocation_endpoint"],
            token=oauth.token["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200
        assert oauth.get("/me").status_code == 401
        with pytest.raises(OAuthError) as refused:
            oauth.refresh_token(metadata["token_endpoint"])
        assert refused.value.error == "invalid_grant"


def test_trusted_proxy_forwarding_https_gets_hsts_from_a_plain_server(
    run_server: ServerFactory, tmp_path: Path
) -> None:
    env = {
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}",
        "AUTHSVC_DATA_DIR": str(tmp_path / "var"),
        "AUTHSVC_TRUSTED_PROXIES": "127.0.0.1",
    }
    server = run_server(env=env)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        forwarded = http.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert hsts_max_age(forwarded) >= ONE_YEAR
        plain = http.get("/healthz")
        assert "strict-transport-security" not in plain.headers
    untrusted = run_server(env={**env, "AUTHSVC_TRUSTED_PROXIES": "10.0.0.1"})
    response = httpx.get(
        f"{untrusted.url}/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=30
    )
    assert response.status_code == 200
    assert "strict-transport-security" not in response.headers


def encrypted_key(path: Path, tls: Tls) -> Path:
    cert = tls.ca.issue_cert("localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cert-only", "--ssl-certfile and --ssl-keyfile go together"),
        ("key-only", "--ssl-certfile and --ssl-keyfile go together"),
        ("missing-cert", "--ssl-certfile: no such file"),
        ("missing-key", "--ssl-keyfile: no such file"),
        ("key-of-another-cert", "the key does not match the certificate"),
        ("cert-as-key", "not a PEM certificate and its PEM private key"),
        ("not-pem", "not a PEM certificate and its PEM private key"),
        ("encrypted-key", "is encrypted; give an unencrypted PEM key"),
    ],
)
def test_bad_tls_files_are_one_line_and_exit_2(
    tls: Tls, tmp_path: Path, case: str, message: str
) -> None:
    other = tls.ca.issue_cert("localhost")
    other_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    cert, key, missing = str(tls.certfile), str(tls.keyfile), str(tmp_path / "missing.pem")
    args = {
        "cert-only": ["--ssl-certfile", cert],
        "key-only": ["--ssl-keyfile", key],
        "missing-cert": ["--ssl-certfile", missing, "--ssl-keyfile", key],
        "missing-key": ["--ssl-certfile", cert, "--ssl-keyfile", missing],
        "key-of-another-cert": ["--ssl-certfile", cert, "--ssl-keyfile", str(other_key)],
        "cert-as-key": ["--ssl-certfile", cert, "--ssl-keyfile", cert],
        "not-pem": ["--ssl-certfile", str(junk), "--ssl-keyfile", str(junk)],
        "encrypted-key": [
            "--ssl-certfile",
            cert,
            "--ssl-keyfile",
            str(encrypted_key(tmp_path / "enc.pem", tls)),
        ],
    }[case]
    env = {
        "AUTHSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never.db'}",
        "AUTHSVC_DATA_DIR": str(tmp_path / "var"),
    }
    try:
        done = run_cli(tmp_path, "serve", "--port", "1", *args, env=env, timeout=60)
    except subprocess.TimeoutExpired:  # a prompt for the key's password would hang here
        pytest.fail(f"serve {case} did not exit")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("authsvc: error: ")
    assert message in lines[0]
    assert "Traceback" not in done.stderr
    # Refused before migrating or generating anything.
    assert not (tmp_path / "never.db").exists()
    assert not (tmp_path / "var").exists()
