"""A job token that expires while the page is disconnected: the page renews it.

The core issues job tokens that live two seconds. The page follows a job with
the eventsUrl's token, loses its connection past that lifetime, and on return
the browser's own reconnect is refused (401, the token expired). The page then
asks for the job with the API key, gets a fresh eventsUrl in the answer's
`Link: <…>; rel="events"`, and resumes the stream after the last event it saw:
the whole script, no loop of refused reconnects.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Page, expect

from gateway import GatewayServer
from server import Core, SyntheticConfig
from tests.security.conftest import make_key, secure_config
from tests.web.conftest import shared
from tests.web.proxy import CuttableProxy
from tests.web.test_page import create_project, saved_script, start_episode, wait_for_length_above
from tests.web.test_page_auth import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN_SECONDS = 2.0


@shared
async def paced_core(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Core]:
    """API keys on, job tokens that expire quickly, a writer slow enough to outlive them."""
    config = secure_config(tmp_path_factory.mktemp("renewal-core"))
    config = dataclasses.replace(
        config,
        auth=dataclasses.replace(config.auth, job_token_seconds=TOKEN_SECONDS),
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=20.0),
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@shared
async def alice(paced_core: Core) -> str:
    return await make_key(paced_core, "alice")


@pytest.fixture(autouse=True)
def no_projects() -> None:
    """Overrides conftest's (which lists projects without a key): this core starts empty."""


async def test_an_expired_job_token_is_renewed_and_the_stream_resumes(
    page: Page, proxy: CuttableProxy, web_gateway: GatewayServer, alice: str
) -> None:
    await sign_in(page, alice)
    await create_project(page, "Long Night")
    generation = await start_episode(page, "Pilot", "the lights go out")
    await wait_for_length_above(page, 40)
    proxy.cut()
    await expect(page.locator("#connection")).to_contain_text("Reconnecting")
    await asyncio.sleep(TOKEN_SECONDS + 1.0)  # the eventsUrl's token is now expired
    proxy.restore()
    await expect(page.locator("#live")).to_have_attribute("data-state", "completed")

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{web_gateway.port}",
        headers={"Authorization": f"Bearer {alice}"},
        timeout=30.0,
    ) as api:
        script = await saved_script(api, generation)
    assert await page.locator("#script-source").text_content() == script
    assert await page.locator("#live").get_attribute("data-corrected") is None

    follows = [
        head for head in proxy.requests() if head.startswith(f"get /v1/{generation}/events?")
    ]
    tokens = [parse_qs(urlsplit(head.split()[1]).query)["access_token"][0] for head in follows]
    assert len(set(tokens)) >= 2, "the page never renewed its job token"
    # The renewed follow resumed after what the page had: Last-Event-ID or lastEventId.
    last = follows[-1]
    assert "last-event-id: " in last or "lasteventid=" in last.split()[1]
