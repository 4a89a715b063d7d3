"""Browser fixtures: a real core with a paced writer, the gateway behind a cuttable
proxy, and Debian's Chromium driven by Playwright (no browser download).

The servers and the browser start once per test module (their event loop is the
module's: test modules here mark themselves `loop_scope="module"`); each test gets a
fresh browser context and starts with no projects.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from gateway import GatewayServer
from server import Core, SyntheticConfig
from tests.conftest import fast_core_config
from tests.gateway.conftest import gateway_config
from tests.web.proxy import CuttableProxy, cuttable_proxy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
#: Slow enough to watch text arrive and to cut the connection mid-script (~6 s a script).
TOKENS_PER_SECOND = 40.0
#: Explicit waits end well before the test timeout, with Playwright's own message.
WAIT_MS = 20000
expect.set_options(timeout=WAIT_MS)


#: Fixtures shared by a test module, in the module's event loop.
shared = pytest_asyncio.fixture(scope="module", loop_scope="module")
#: Per-test fixtures, in the module's event loop too.
per_test = pytest_asyncio.fixture(loop_scope="module")


@shared
async def paced_core(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Core]:
    """A core whose synthetic writer writes at about the pace of a real model."""
    config = dataclasses.replace(
        fast_core_config(tmp_path_factory.mktemp("core")),
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=TOKENS_PER_SECOND),
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@shared
async def web_gateway(paced_core: Core) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(gateway_config(f"127.0.0.1:{paced_core.grpc_port}", sse_retry_ms=500))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@shared
async def proxy(web_gateway: GatewayServer) -> AsyncIterator[CuttableProxy]:
    """What the browser connects to: the gateway, through a link a test can cut."""
    async with cuttable_proxy(web_gateway.port) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(proxy: CuttableProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


@shared
async def api(web_gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    """Direct API access for checking what the page did."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{web_gateway.port}", timeout=30.0
    ) as client:
        yield client


@shared
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/system_deps.sh` (Debian's chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def no_projects(api: httpx.AsyncClient, proxy: CuttableProxy) -> None:
    """Each test starts from an empty project list, with the link up."""
    proxy.restore()
    for project in (await api.get("/v1/projects", params={"pageSize": 1000})).json()["projects"]:
        deleted = await api.delete(f"/v1/{project['name']}", params={"force": "true"})
        assert deleted.status_code == 200, deleted.text


@dataclasses.dataclass
class PageErrors:
    """Script errors and CSP violations the page raised; a test ends with none."""

    messages: list[str] = dataclasses.field(default_factory=list)


@per_test
async def page(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=base_url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(WAIT_MS)
    opened = await context.new_page()
    errors = PageErrors()
    opened.on("pageerror", lambda error: errors.messages.append(f"pageerror: {error}"))
    opened.on(
        "console",
        lambda message: (
            errors.messages.append(f"console: {message.text}")
            if message.type == "error" and _unexpected(message.text)
            else None
        ),
    )
    try:
        yield opened
    finally:
        await context.close()
    assert errors.messages == [], errors.messages


def _unexpected(text: str) -> bool:
    # Failed requests the tests cause on purpose (a cut link, 4xx answers) are logged
    # by Chromium as console errors; script errors and CSP violations are not these.
    return "Failed to load resource" not in text and "net::ERR_" not in text


async def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot under test-artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
