"""The docs page in a real browser: Swagger UI 5 rendered from assets the service serves
itself, with every other host unreachable (it must work with no internet), and used as a
person would: Authorize, then Try it out."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from tests.conftest import PASSWORD, unique_username
from tests.e2e.browser import Recorder, launch_chromium, screenshot
from tests.e2e.conftest import ServerFactory
from tests.e2e.processes import server_env

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


async def test_docs_page_authorize_then_try_it_out_on_me(
    run_server: ServerFactory, tmp_path: Path
) -> None:
    """A person on /docs: Authorize with a username and password (the OAuth2 password flow
    against /login), then GET /me → Try it out → Execute shows who they are."""
    server = run_server(env=server_env(f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}", tmp_path))
    username = unique_username("docs")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        created = await http.post("/register", json={"username": username, "password": PASSWORD})
        assert created.status_code == 201
    async with launch_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1200, "height": 900})
        recorder = Recorder(server.url)
        recorder.watch(page, "docs")
        await page.goto(f"{server.url}/docs")
        await page.get_by_role("button", name="Authorize").first.click()
        dialog = page.locator(".dialog-ux")
        await dialog.locator("#oauth_username").fill(username)
        await dialog.locator("#oauth_password").fill(PASSWORD)
        await dialog.get_by_role("button", name="Apply given OAuth2 credentials").click()
        await expect(dialog.get_by_text("Authorized", exact=False).first).to_be_visible()
        await dialog.get_by_role("button", name="Close").click()

        operation = page.locator(".opblock-get").filter(
            has=page.locator('.opblock-summary-path[data-path="/me"]')
        )
        await operation.locator(".opblock-summary").click()
        await operation.get_by_role("button", name="Try it out").click()
        await operation.get_by_role("button", name="Execute").click()
        live = operation.locator(".live-responses-table tbody")
        await expect(live.locator(".response-col_status")).to_have_text("200")
        await expect(live.locator(".response-col_description")).to_contain_text(
            f'"username": "{username}"'
        )
        await screenshot(page, "docs-authorize-try-me", operation)
    seen = [(s.method, s.path, s.status) for s in await recorder.settle()]
    assert ("POST", "/login", 200) in seen
    assert seen.index(("POST", "/login", 200)) < seen.index(("GET", "/me", 200))
