"""The web page against a core with API keys ON, in real Chromium (no interception).

The page meets the real 401 and asks for a key; signed in with tenant A's key it
writes an episode followed by EventSource on the real `eventsUrl` (job token in the
query, resumed after a cut link), and downloads an export with the key. Tenant B,
in its own browser context, sees none of A's projects.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Response, expect

from gateway import GatewayServer
from server import Core, SyntheticConfig
from tests.security.conftest import make_key, secure_config
from tests.web.conftest import TOKENS_PER_SECOND, WAIT_MS, screenshot, shared
from tests.web.proxy import CuttableProxy
from tests.web.test_page import (
    create_project,
    follow_until,
    saved_script,
    script_length,
    start_episode,
    wait_for_length_above,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclasses.dataclass(frozen=True)
class Keys:
    alice: str
    bob: str


@shared
async def paced_core(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Core]:
    """Overrides conftest's: the same paced writer, with API keys required."""
    config = dataclasses.replace(
        secure_config(tmp_path_factory.mktemp("secure-core")),
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=TOKENS_PER_SECOND),
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@shared
async def keys(paced_core: Core) -> Keys:
    return Keys(alice=await make_key(paced_core, "alice"), bob=await make_key(paced_core, "bob"))


@pytest.fixture(scope="module")
def web_gateway_url(web_gateway: GatewayServer) -> str:
    """The gateway itself (not the proxy), for the test's own checks with A's key."""
    return f"http://127.0.0.1:{web_gateway.port}"


@pytest.fixture(autouse=True)
def no_projects() -> None:
    """Overrides conftest's (which lists projects without a key): this core starts empty."""


async def sign_in(page: Page, key: str, address: str = "/") -> None:
    """Open the page; the real core answers 401, the sign-in opens, the key is given."""

    def lists_projects(answer: Response) -> bool:
        return urlsplit(answer.url).path == "/v1/projects"

    async with page.expect_response(lists_projects) as refused:
        await page.goto(address)
    assert (await refused.value).status == 401
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#sign-in-reason")).to_contain_text("needs an API key")
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.get_by_label("API key").fill(key)
    async with page.expect_response(lists_projects) as listed:
        await page.get_by_label("API key").press("Enter")
    answer = await listed.value
    assert answer.status == 200
    assert (await answer.request.all_headers())["authorization"] == f"Bearer {key}"
    await expect(page.locator("#sign-in")).to_be_hidden()
    await expect(page.locator("#account-state")).to_have_text("Signed in with an API key")
    await expect(page.locator("#welcome")).to_be_visible()


async def test_tenant_signs_in_writes_follows_with_the_job_token_and_exports(
    page: Page,
    browser: Browser,
    base_url: str,
    proxy: CuttableProxy,
    web_gateway_url: str,
    keys: Keys,
    tmp_path: Path,
) -> None:
    await sign_in(page, keys.alice)
    await expect(page.locator("#projects-empty")).to_be_visible()
    await create_project(page, "Alice Only")
    alice = httpx.AsyncClient(
        base_url=web_gateway_url,
        headers={"Authorization": f"Bearer {keys.alice}"},
        timeout=30.0,
    )
    async with alice:
        project = (await alice.get("/v1/projects")).json()["projects"][0]
        assert project["title"] == "Alice Only"

        # Write: EventSource follows the eventsUrl of the 201, job token and all.
        followed: list[str] = []
        page.on(
            "request",
            lambda request: followed.append(request.url) if "/events" in request.url else None,
        )
        async with page.expect_response(
            lambda answer: answer.request.method == "POST" and answer.url.endswith("/generations")
        ) as created:
            generation = await start_episode(page, "Pilot", "a heist goes wrong")
        events_url = (await (await created.value).json())["eventsUrl"]
        token = parse_qs(urlsplit(events_url).query)["access_token"][0]
        assert token.startswith("sgjt.")
        await wait_for_length_above(page, 40)
        proxy.cut()
        await expect(page.locator("#connection")).to_contain_text("Reconnecting")
        cut_at = await script_length(page)
        job_sequence = int((await alice.get(f"/v1/{generation}")).json()["lastSequence"])
        await follow_until(alice, generation, job_sequence + 10)
        proxy.restore()
        await expect(page.locator("#live")).to_have_attribute("data-state", "completed")
        script = await saved_script(alice, generation)
        assert await page.locator("#script-source").text_content() == script
        assert await page.locator("#live").get_attribute("data-corrected") is None
        assert await script_length(page) == len(script) > cut_at

        # Every follow, the first and the resume after the cut, used the job token.
        assert len(followed) >= 2, followed
        assert followed[0] == f"{base_url}{events_url}"
        for url in followed:
            assert parse_qs(urlsplit(url).query)["access_token"] == [token], url
        resumed = [
            head
            for head in proxy.requests()
            if head.startswith(f"get /v1/{generation}/events?access_token=")
            and re.search(r"^last-event-id: [1-9][0-9]*\r?$", head, re.MULTILINE)
        ]
        assert resumed, "EventSource did not resume with Last-Event-ID and the token"
        await expect(page.locator("#connection")).to_be_hidden()
        await screenshot(page, "12-signed-in-written")

        # Read it back and download an export: fetch() carries the key.
        await page.locator("#episode-list button").first.click()
        await expect(page.locator("#reader-title")).to_contain_text("Pilot")
        async with (
            page.expect_request(lambda request: ":export?" in request.url) as asked,
            page.expect_download() as waiting,
        ):
            await page.locator(".downloads button[data-format=fountain]").click()
        download = await waiting.value
        exported = await asked.value
        assert (await exported.all_headers())["authorization"] == f"Bearer {keys.alice}"
        target = tmp_path / download.suggested_filename
        await download.save_as(target)
        assert script.splitlines()[0] in target.read_text(encoding="utf-8")

    # Signing out takes Alice's work off the screen, before any reload.
    await page.locator("#sign-out").click()
    await expect(page.locator("#sign-in-open")).to_be_visible()
    await expect(page.locator("#project-list li")).to_have_count(0)
    await expect(page.locator("#project-view")).to_be_hidden()
    await expect(page.locator("#episode-list li")).to_have_count(0)
    await expect(page.locator("#live")).to_be_hidden()
    assert "Alice Only" not in (await page.locator("body").inner_text())

    # Tenant B, in its own context, with a link to A's project: sees nothing of it.
    context = await browser.new_context(base_url=base_url)
    context.set_default_timeout(WAIT_MS)
    try:
        other = await context.new_page()
        errors: list[str] = []
        other.on("pageerror", lambda error: errors.append(str(error)))
        await sign_in(other, keys.bob, f"/#{project['name']}")
        await expect(other.locator("#projects-empty")).to_be_visible()
        await expect(other.locator("#project-list li")).to_have_count(0)
        await expect(other.locator("#project-view")).to_be_hidden()
        status = await other.evaluate(
            """async (name) => {
                 const key = sessionStorage.getItem('scriptgen.apiKey');
                 const headers = {Authorization: `Bearer ${key}`};
                 return (await fetch(`/v1/${name}`, {headers})).status;
               }""",
            project["name"],
        )
        assert status == 404
        assert errors == []
    finally:
        await context.close()
