"""The docs page in a real browser: Swagger UI 5 rendered from assets the service serves
itself, with every other host unreachable (it must work with no internet)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerFactory

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail(
                "CI=true but chromium is not installed (.ci/run installs Debian's chromium)"
            )
        pytest.skip("Debian's chromium is not installed")
    return CHROMIUM


def render(chromium: str, url: str, profile: Path) -> str:
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            # Any host but this machine fails to resolve: a CDN asset would not load.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_docs_page_renders_offline_in_chromium(
    run_server: ServerFactory, chromium: str, tmp_path: Path
) -> None:
    server = run_server()
    page = httpx.get(f"{server.url}/docs").text
    assert "cdn" not in page.lower()
    dom = render(chromium, f"{server.url}/docs", tmp_path / "profile")
    # Swagger UI's own markup exists only if its JavaScript ran and read /openapi.json.
    assert 'class="swagger-ui"' in dom
    assert "opblock-summary-path" in dom
    for path in ("/login", "/generateTokens", "/refresh", "/me", "/.well-known/jwks.json"):
        assert f'data-path="{path}"' in dom, path
    assert "Authorize" in dom  # the OAuth2 password flow of /login
    assert "OAS 3.1" in dom
