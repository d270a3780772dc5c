"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by
Playwright (nothing downloads a browser), a static file server for pages on other origins,
a recorder of what the pages sent, and where screenshots go.

Screenshots of each test's final state are written to ``test-artifacts/browser/`` at the
repository root (gitignored), or to ``$AUTHSVC_TEST_ARTIFACTS/browser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, Response, async_playwright

from tests.e2e.processes import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CLIENT = REPO / "examples" / "browser"
ARTIFACTS = Path(os.environ.get("AUTHSVC_TEST_ARTIFACTS") or REPO / "test-artifacts") / "browser"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# What works on this project's machines: no sandbox (root), no GPU, and nothing that phones
# home (background networking, component updates, sync). Every host but this machine's
# fails to resolve, so a page that needed the internet would show it.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def chromium_or_skip() -> str:
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail(
                "CI=true but chromium is not installed (.ci/run installs Debian's chromium)"
            )
        pytest.skip("Debian's chromium is not installed")
    return CHROMIUM


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with a fresh profile (Playwright makes a temporary one)."""
    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.contextmanager
def static_server(directory: Path, *, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``directory`` over plain HTTP (``python -m http.server``) on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", host, "--directory", directory],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://{host}:{port}/", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"static server on {port} did not start")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Seen:
    """One response a page received: which tab, what was sent, what came back."""

    tab: str
    method: str
    path: str
    status: int
    cookie: str | None  # the authsvc_refresh cookie the request carried, if any
    error: str | None  # the contract's `error` code of a JSON error body


@dataclass
class Recorder:
    """Everything the pages of a context fetched from one origin, in order of arrival."""

    origin: str
    seen: list[Seen] = field(default_factory=list)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def watch(self, page: Page, tab: str) -> None:
        def on_response(response: Response) -> None:
            if response.url.startswith(self.origin):
                task = asyncio.ensure_future(self._record(tab, response))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

        page.on("response", on_response)

    async def _record(self, tab: str, response: Response) -> None:
        headers = await response.request.all_headers()
        cookies = dict(
            part.strip().split("=", 1)
            for part in headers.get("cookie", "").split(";")
            if "=" in part
        )
        error = None
        if response.status >= 400:
            with contextlib.suppress(Exception):
                body: Any = json.loads(await response.body())
                error = body.get("error") if isinstance(body, dict) else None
        path = response.url[len(self.origin) :].split("?")[0]
        self.seen.append(
            Seen(
                tab,
                response.request.method,
                path,
                response.status,
                cookies.get("authsvc_refresh"),
                error,
            )
        )

    async def settle(self) -> list[Seen]:
        while self._pending:
            await asyncio.gather(*list(self._pending))
        return list(self.seen)

    def mark(self) -> int:
        return len(self.seen)

    async def since(self, mark: int, path: str | None = None) -> list[Seen]:
        seen = (await self.settle())[mark:]
        return [s for s in seen if path is None or s.path == path]


async def screenshot(page: Page, name: str, element: Locator | None = None) -> Path:
    """The page's final state (or one element of it), kept as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if element is not None:
        await element.screenshot(path=str(path))
    else:
        await page.screenshot(path=str(path), full_page=True)
    return path


def server_requests(log: str, *, path: str, method: str = "POST") -> list[int]:
    """Statuses of the requests the service logged for ``method path``, in order."""
    statuses = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            record.get("message") == "request"
            and record.get("method") == method
            and record.get("path") == path
        ):
            statuses.append(int(record["status"]))
    return statuses


def server_events(log: str, event: str) -> int:
    """How many times the service logged the authentication event ``event``."""
    count = 0
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("event") == event:
                count += 1
    return count
