"""The reference browser client (``examples/browser/``) in headless Chromium, against a real
``authsvc serve``, served from another origin than the service: login, ``/me``, silent
refresh on access-token expiry, logout, reload, two tabs refreshing at once, and CORS.

The page is at ``http://localhost:P`` and the service at ``http://localhost:A``: different
origins of one site, as an app at app.example.com and the service at auth.example.com are.
Chromium treats localhost as a secure context, so the refresh cookie keeps ``Secure`` (the
production default) and Web Locks are available.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.conftest import PASSWORD, unique_username
from tests.e2e.browser import (
    EXAMPLE_CLIENT,
    Recorder,
    launch_chromium,
    screenshot,
    server_events,
    server_requests,
    static_server,
)
from tests.e2e.conftest import ServerFactory
from tests.e2e.processes import Server, server_env

pytestmark = pytest.mark.slow

ACCESS_TTL = 5
# Round-trip latency the two-tab test gives each tab (DevTools network emulation): with it,
# two refreshes that start together are both in flight before either is answered, as on a
# real network, so only the client's single-flight lock can keep them apart.
LATENCY_MS = 300


@dataclass
class Stack:
    server: Server
    api: str  # the service, as the pages call it
    app: str  # the allowed origin the reference client is served from
    foreign: str  # another origin of the same site, not allowed by CORS
    cross_site: str  # an origin of another site (127.0.0.1 is not localhost's site)

    def client_url(self, origin: str | None = None) -> str:
        return f"{origin or self.app}/index.html?api={self.api}"

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """A request straight to the service, not from a page."""
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            return await http.post(path, **kwargs)

    async def register(self) -> str:
        username = unique_username("web")
        response = await self.post("/register", json={"username": username, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return username


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as browser:
        yield browser


@pytest.fixture
def stack(run_server: ServerFactory, tmp_path: Path) -> Iterator[Stack]:
    with static_server(EXAMPLE_CLIENT) as app_port, static_server(EXAMPLE_CLIENT) as other_port:
        app = f"http://localhost:{app_port}"
        env = server_env(
            f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}",
            tmp_path / "var",
            {
                "AUTHSVC_CORS_ORIGINS": app,
                "AUTHSVC_ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL),
                # Secure, as in production: Chromium accepts it from http://localhost.
                "AUTHSVC_COOKIE_SECURE": "true",
                "AUTHSVC_REFRESH_REUSE_GRACE_SECONDS": "0",
            },
        )
        server = run_server(env=env)
        yield Stack(
            server=server,
            api=f"http://localhost:{server.port}",
            app=app,
            foreign=f"http://localhost:{other_port}",
            cross_site=f"http://127.0.0.1:{app_port}",
        )


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 900, "height": 640})
    try:
        yield context
    finally:
        await context.close()


async def open_client(
    context: BrowserContext, url: str, recorder: Recorder | None = None, tab: str = "tab"
) -> Page:
    page = await context.new_page()
    if recorder is not None:
        recorder.watch(page, tab)
    await page.goto(url)
    await idle(page)
    return page


async def idle(page: Page) -> None:
    """Wait until the client has finished what it was doing (``aria-busy`` on ``<body>``)."""
    await expect(page.locator('body[aria-busy="false"]')).to_be_attached()


async def log_in(page: Page, username: str) -> None:
    await page.get_by_test_id("username").fill(username)
    await page.get_by_test_id("password").fill(PASSWORD)
    await page.get_by_test_id("login").click()
    await idle(page)
    await expect(page.get_by_test_id("whoami")).to_have_text(username)
    await expect(page.get_by_test_id("status")).to_have_text("ok")


async def call_me(page: Page) -> None:
    """Click ``call-me`` and wait until it is done (any refresh and retry included)."""
    await page.get_by_test_id("call-me").click()
    await idle(page)


async def wait_until_expired(issued_at: float) -> None:
    """Sleep until an access token issued no earlier than ``issued_at`` has expired."""
    await asyncio.sleep(max(0.0, issued_at + ACCESS_TTL + 1.2 - time.time()))


async def service_log(stack: Stack, before: str, *, path: str, count: int) -> str:
    """What the service logged since ``before``, once it holds ``count`` requests to ``path``
    (a line is written just after its response is sent, so it may trail the browser)."""
    deadline = time.monotonic() + 15
    while True:
        log = stack.server.output()[len(before) :]
        if len(server_requests(log, path=path)) >= count or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.1)


async def refresh_cookie(context: BrowserContext) -> str | None:
    for cookie in await context.cookies():
        if cookie["name"] == "authsvc_refresh":
            return cookie["value"]
    return None


async def storage_of(page: Page) -> Any:
    return await page.evaluate(
        "() => [JSON.stringify(localStorage), JSON.stringify(sessionStorage), document.cookie]"
    )


async def test_login_me_silent_refresh_on_expiry_and_logout(
    stack: Stack, context: BrowserContext
) -> None:
    username = await stack.register()
    recorder = Recorder(stack.api)
    page = await open_client(context, stack.client_url(), recorder)
    await expect(page.get_by_test_id("status")).to_have_text("logged out")
    await expect(page.get_by_test_id("whoami")).to_have_text("")

    await log_in(page, username)
    logged_in_at = time.time()
    cookie = await refresh_cookie(context)
    assert cookie is not None
    jar = {c["name"]: c for c in await context.cookies()}
    assert jar["authsvc_refresh"]["httpOnly"] and jar["authsvc_refresh"]["secure"]
    assert jar["authsvc_refresh"]["sameSite"] == "Strict"
    # The access token is in memory only; the refresh token is out of the page's reach.
    for stored in await storage_of(page):
        assert "eyJ" not in stored and "authsvc_refresh" not in stored

    # Still fresh: /me goes straight through.
    mark = recorder.mark()
    await call_me(page)
    steps = [(s.method, s.path, s.status) for s in await recorder.since(mark)]
    assert steps == [("GET", "/me", 200)]

    # The access token expires; the next call refreshes first, silently.
    await wait_until_expired(logged_in_at)
    mark = recorder.mark()
    await call_me(page)
    await expect(page.get_by_test_id("whoami")).to_have_text(username)
    await expect(page.get_by_test_id("status")).to_have_text("ok")
    steps = [(s.method, s.path, s.status) for s in await recorder.since(mark)]
    assert steps == [("POST", "/refresh", 200), ("GET", "/me", 200)]
    refreshes = await recorder.since(mark, "/refresh")
    assert refreshes[0].cookie == cookie  # it presented the cookie it had
    rotated = await refresh_cookie(context)
    assert rotated is not None and rotated != cookie

    # Logout: whoami empty, the cookie gone, and the session revoked at the service.
    mark = recorder.mark()
    await page.get_by_test_id("logout").click()
    await idle(page)
    logout = await recorder.since(mark)
    assert [(s.method, s.path, s.status, s.cookie) for s in logout] == [
        ("POST", "/logout", 204, rotated)
    ]
    await expect(page.get_by_test_id("whoami")).to_have_text("")
    await expect(page.get_by_test_id("status")).to_have_text("logged out")
    assert await refresh_cookie(context) is None
    reused = await stack.post("/refresh", json={"refresh_token": rotated})
    assert reused.status_code == 403
    assert reused.json()["error"] == "refresh_token_revoked"
    # Calling /me now finds no session: no cookie to refresh with.
    await call_me(page)
    await expect(page.get_by_test_id("status")).to_have_text("logged out")
    await expect(page.get_by_test_id("whoami")).to_have_text("")
    await screenshot(page, "reference-client-login-refresh-logout")


async def test_a_401_token_expired_refreshes_once_and_retries(
    stack: Stack, context: BrowserContext
) -> None:
    # The page's clock stops at login: to the client its token never expires, so only the
    # service's 401 can tell it (as when the browser's clock runs behind the service's).
    username = await stack.register()
    recorder = Recorder(stack.api)
    page = await open_client(context, stack.client_url(), recorder)
    await log_in(page, username)
    logged_in_at = time.time()
    await page.clock.set_fixed_time(logged_in_at)
    await wait_until_expired(logged_in_at)

    mark = recorder.mark()
    await call_me(page)
    await expect(page.get_by_test_id("whoami")).to_have_text(username)
    await expect(page.get_by_test_id("status")).to_have_text("ok")
    steps = [(s.method, s.path, s.status, s.error) for s in await recorder.since(mark)]
    assert steps == [
        ("GET", "/me", 401, "token_expired"),
        ("POST", "/refresh", 200, None),
        ("GET", "/me", 200, None),
    ]

    # Once only: when the retry is refused too (the session was revoked meanwhile), the
    # client gives up with the service's answer instead of refreshing again.
    await wait_until_expired(time.time())
    cookie = await refresh_cookie(context)
    revoked = await stack.post("/revoke", data={"token": cookie or ""})
    assert revoked.status_code == 200
    mark = recorder.mark()
    await call_me(page)
    steps = [(s.method, s.path, s.status, s.error) for s in await recorder.since(mark)]
    assert steps == [
        ("GET", "/me", 401, "token_expired"),
        ("POST", "/refresh", 403, "refresh_token_revoked"),
    ]
    await expect(page.get_by_test_id("status")).to_have_text("refresh_token_revoked")
    await expect(page.get_by_test_id("whoami")).to_have_text("")
    await screenshot(page, "reactive-refresh-then-revoked")


async def click_together(pages: list[Page], test_id: str) -> None:
    """Click ``test_id`` in every page in the same instant: the first page tells the others
    over a BroadcastChannel as it clicks its own."""
    for page in pages[1:]:
        await page.evaluate(
            """(id) => { new BroadcastChannel("test-click-together").onmessage = () =>
                document.querySelector(`[data-testid="${id}"]`).click(); }""",
            test_id,
        )
    await pages[0].evaluate(
        """(id) => { new BroadcastChannel("test-click-together").postMessage(id);
            document.querySelector(`[data-testid="${id}"]`).click(); }""",
        test_id,
    )
    for page in pages:
        await idle(page)


async def test_two_tabs_expiring_together_refresh_without_reuse(
    stack: Stack, context: BrowserContext
) -> None:
    username = await stack.register()
    recorder = Recorder(stack.api)
    first = await open_client(context, stack.client_url(), recorder, "first")
    await log_in(first, username)
    # The second tab restores the session from the cookie and shares its token: from here
    # on both tabs hold one access token, which expires for both at once.
    second = await open_client(context, stack.client_url(), recorder, "second")
    restored_at = time.time()
    await expect(second.get_by_test_id("whoami")).to_have_text(username)
    for page in (first, second):
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": LATENCY_MS,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            },
        )
    await wait_until_expired(restored_at)

    mark = recorder.mark()
    await click_together([first, second], "call-me")
    for page in (first, second):
        await expect(page.get_by_test_id("status")).to_have_text("ok")
        await expect(page.get_by_test_id("whoami")).to_have_text(username)

    seen = await recorder.since(mark)
    refreshes = [s for s in seen if s.path == "/refresh"]
    assert refreshes, seen
    assert all(s.status == 200 for s in refreshes), refreshes
    presented = [s.cookie for s in refreshes]
    assert None not in presented
    assert len(set(presented)) == len(presented), "two refreshes presented one token"
    assert server_events(stack.server.output(), "refresh_reuse_detected") == 0
    assert 403 not in server_requests(stack.server.output(), path="/refresh")

    # The session is intact: the next expiry refreshes again in either tab.
    await wait_until_expired(time.time() - 1)
    await call_me(first)
    await expect(first.get_by_test_id("status")).to_have_text("ok")
    await screenshot(first, "two-tabs-first")
    await screenshot(second, "two-tabs-second")


async def test_reload_restores_the_session_from_the_cookie(
    stack: Stack, context: BrowserContext
) -> None:
    username = await stack.register()
    recorder = Recorder(stack.api)
    page = await open_client(context, stack.client_url(), recorder)
    await log_in(page, username)
    cookie = await refresh_cookie(context)

    mark = recorder.mark()
    await page.reload()
    await idle(page)
    await expect(page.get_by_test_id("whoami")).to_have_text(username)
    await expect(page.get_by_test_id("status")).to_have_text("ok")
    steps = [(s.method, s.path, s.status) for s in await recorder.since(mark)]
    assert steps == [("POST", "/refresh", 200), ("GET", "/me", 200)]
    assert (await recorder.since(mark, "/refresh"))[0].cookie == cookie
    for stored in await storage_of(page):
        assert "eyJ" not in stored
    await screenshot(page, "reload-restores-session")


async def test_cors_allowed_origin_works_and_other_origins_cannot_read_or_use_the_cookie(
    stack: Stack, context: BrowserContext
) -> None:
    username = await stack.register()
    app = await open_client(context, stack.client_url())
    await log_in(app, username)
    # The allowed origin logs in and refreshes with credentials, and reads the answers.
    refreshed = await app.evaluate(
        """async (api) => {
            const r = await fetch(`${api}/refresh?transport=cookie`,
                                  {method: "POST", credentials: "include"});
            return [r.status, Object.keys(await r.json()).sort()];
        }""",
        stack.api,
    )
    assert refreshed == [200, ["access_token", "expires_in", "refresh_expires_in", "token_type"]]
    cookie = await refresh_cookie(context)
    assert cookie is not None

    # The same client, loaded from an origin of the same site that CORS does not allow, in
    # the same browser: its refresh on load carries the cookie (same site) but is refused
    # without consuming it, and the page cannot read any answer.
    before = stack.server.output()
    foreign = await open_client(context, stack.client_url(stack.foreign))
    await expect(foreign.get_by_test_id("status")).to_have_text("network_error")
    await expect(foreign.get_by_test_id("whoami")).to_have_text("")
    await foreign.get_by_test_id("username").fill(username)
    await foreign.get_by_test_id("password").fill(PASSWORD)
    await foreign.get_by_test_id("login").click()
    await idle(foreign)
    await expect(foreign.get_by_test_id("status")).to_have_text("network_error")
    reads = await foreign.evaluate(
        """async (api) => {
            const attempt = async (url, init) => {
                try { const r = await fetch(url, init); return `read ${r.status}`; }
                catch (e) { return "blocked"; }
            };
            return [
                await attempt(`${api}/healthz`, {}),
                await attempt(`${api}/refresh?transport=cookie`,
                              {method: "POST", credentials: "include"}),
                await attempt(`${api}/.well-known/jwks.json`, {credentials: "include"}),
            ];
        }""",
        stack.api,
    )
    assert reads == ["blocked", "blocked", "blocked"]
    await screenshot(foreign, "cors-foreign-origin")
    # Both refreshes (on load, and the explicit one) reached the service with the cookie
    # and were refused by the origin check; the JSON login never got past the preflight.
    log = await service_log(stack, before, path="/refresh", count=2)
    assert server_requests(log, path="/refresh") == [403, 403]
    assert server_requests(log, path="/login") == []
    assert server_requests(log, path="/login", method="OPTIONS") == [400]
    assert await refresh_cookie(context) == cookie  # nothing consumed

    # A page of another site: the SameSite=Strict cookie is not even sent.
    before = stack.server.output()
    cross = await open_client(context, stack.client_url(stack.cross_site))
    await expect(cross.get_by_test_id("status")).to_have_text("network_error")
    log = await service_log(stack, before, path="/refresh", count=1)
    assert server_requests(log, path="/refresh") == [422]  # no token: no cookie came
    assert await refresh_cookie(context) == cookie
    await screenshot(cross, "cors-cross-site")

    # The allowed origin's session is untouched by all of that.
    await app.reload()
    await idle(app)
    await expect(app.get_by_test_id("whoami")).to_have_text(username)
    await expect(app.get_by_test_id("status")).to_have_text("ok")
