"""The web page in real headless Chromium: projects, story knowledge, live writing with
cancel and resume after a cut connection, the episode reader and exports, errors."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from playwright.async_api import Page, Route, expect

from tests.web.conftest import WAIT_MS, screenshot
from tests.web.proxy import CuttableProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def open_page(page: Page) -> None:
    await page.goto("/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


async def create_project(page: Page, title: str, language: str = "en") -> None:
    await page.get_by_text("New project").click()
    form = page.locator("#new-project")
    await form.get_by_label("Title").fill(title)
    await form.get_by_label("Language").select_option(language)
    await form.get_by_label("Logline").fill("A nurse finds a patient who never existed.")
    await form.get_by_role("button", name="Create project").click()
    await expect(page.locator("#project-title")).to_have_text(title)


async def start_episode(page: Page, title: str, description: str = "") -> str:
    await page.get_by_label("Episode title").fill(title)
    await page.get_by_label("What happens").fill(description)
    await page.get_by_role("button", name="Write episode").click()
    live = page.locator("#live")
    await expect(live).to_have_attribute("data-generation", re.compile(r"^generations/"))
    generation = await live.get_attribute("data-generation")
    assert generation is not None
    return generation


async def script_length(page: Page) -> int:
    return int(await page.locator("#live").get_attribute("data-length") or 0)


async def wait_for_length_above(page: Page, length: int) -> int:
    await page.wait_for_function(
        "n => Number(document.querySelector('#live').dataset.length) > n", arg=length
    )
    return await script_length(page)


async def follow_until(api: httpx.AsyncClient, generation: str, sequence: int) -> None:
    """Return once the job has written event `sequence` (read from its own stream)."""
    async with aconnect_sse(api, "GET", f"/v1/{generation}/events") as source:
        async for event in source.aiter_sse():
            if event.id and int(event.id) >= sequence:
                return
    raise AssertionError(f"{generation} ended before event {sequence}")


async def saved_script(api: httpx.AsyncClient, generation: str) -> str:
    job = (await api.get(f"/v1/{generation}")).json()
    episode = (await api.get(f"/v1/{job['episode']}")).json()
    return str(episode["script"])


async def test_writer_creates_a_project_adds_knowledge_writes_and_exports(
    page: Page, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await open_page(page)
    await expect(page.locator("#projects-empty")).to_be_visible()
    await screenshot(page, "01-empty")
    await create_project(page, "야간 근무 Night Shift", language="ko")

    # Story knowledge: add two documents, delete one.
    await page.get_by_text("Add a document").click()
    knowledge = page.locator("#new-knowledge")
    await knowledge.get_by_label("Kind").select_option("KNOWLEDGE_KIND_CHARACTER_PROFILE")
    await knowledge.get_by_label("Title").fill("지수")
    await knowledge.get_by_label("Text").fill("지수는 야간 병동 간호사다. 기억력이 비상하다.")
    await knowledge.get_by_role("button", name="Add document").click()
    await expect(page.locator("#knowledge-list li")).to_have_count(1)
    await knowledge.get_by_label("Title").fill("Style")
    await knowledge.get_by_label("Text").fill("Short scenes, hard cuts.")
    await knowledge.get_by_role("button", name="Add document").click()
    await expect(page.locator("#knowledge-list li")).to_have_count(2)
    await expect(page.locator("#knowledge-list li").first).to_contain_text("지수")
    await expect(page.locator("#knowledge-list li").first).to_contain_text("Character profile")
    await page.locator("#knowledge-list li").first.get_by_text("Read").click()
    await expect(page.locator("#knowledge-list .full-text").first).to_have_text(
        "지수는 야간 병동 간호사다. 기억력이 비상하다."
    )
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete document “Style”").click()
    await expect(page.locator("#knowledge-list li")).to_have_count(1)
    project = (await api.get("/v1/projects")).json()["projects"][0]
    stored = (await api.get(f"/v1/{project['name']}/knowledge")).json()
    assert [doc["title"] for doc in _documents(stored)] == ["지수"]
    await screenshot(page, "02-project-and-knowledge")

    # Write: the text arrives in steps, laid out as a screenplay.
    await page.get_by_label("Target length in minutes").fill("1")
    generation = await start_episode(page, "첫 번째 밤", "지수가 사라진 환자를 찾는다")
    assert (await api.get(f"/v1/{project['name']}")).json()["targetEpisodeMinutes"] == 1
    first = await wait_for_length_above(page, 0)
    later = await wait_for_length_above(page, first + 20)
    assert later > first
    await expect(page.locator("#live")).to_have_attribute("data-state", "running")
    await expect(page.locator("#stage")).to_contain_text("Writing the script")
    await screenshot(page, "03-writing-live")
    await expect(page.locator("#live")).to_have_attribute("data-state", "completed")
    script = await saved_script(api, generation)
    assert await page.locator("#script-source").text_content() == script
    assert await page.locator("#live").get_attribute("data-corrected") is None
    # Korean cues are forced with @ and still lay out as character cues.
    cues = await page.locator("#script .character").all_text_contents()
    assert cues and all(not cue.startswith("@") for cue in cues)
    assert any(re.search("[가-힣]", cue) for cue in cues)
    assert await page.locator("#script .scene-heading").count() >= 1
    assert await page.locator("#script .dialogue").count() >= 1
    assert await page.locator("#script .transition").count() >= 1
    assert await page.locator("#script").get_attribute("lang") is None
    assert await page.locator("#live").get_attribute("lang") == "ko"
    await screenshot(page, "04-written")

    # Read it back and download every export.
    await page.locator("#episode-list button").first.click()
    await expect(page.locator("#reader-title")).to_be_focused()
    await expect(page.locator("#reader-title")).to_contain_text("첫 번째 밤")
    live_text = await page.locator("#script").inner_text()
    assert await page.locator("#reader-script").inner_text() == live_text
    await screenshot(page, "05-reader")
    checks: dict[str, Callable[[bytes], bool]] = {
        "fountain": lambda body: script.splitlines()[0].encode() in body,
        "fdx": lambda body: b"<FinalDraft" in body,
        "html": lambda body: b"<html" in body.lower(),
        "pdf": lambda body: body.startswith(b"%PDF"),
    }
    for format_name, check in checks.items():
        async with page.expect_download() as waiting:
            await page.locator(f".downloads button[data-format={format_name}]").click()
        download = await waiting.value
        target = tmp_path / download.suggested_filename
        await download.save_as(target)
        assert check(target.read_bytes()), format_name

    # Edit, then delete the project (it has an episode: the page asks to force).
    await page.get_by_text("Edit project").click()
    await page.locator("#edit-project").get_by_label("Tone").fill("느와르, 건조한 유머")
    await page.locator("#edit-project").get_by_role("button", name="Save changes").click()
    await expect(page.locator("#notice")).to_contain_text("Project saved.")
    assert (await api.get(f"/v1/{project['name']}")).json()["tone"] == "느와르, 건조한 유머"
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete project").click()
    await expect(page.locator("#projects-empty")).to_be_visible()
    assert (await api.get(f"/v1/{project['name']}")).status_code == 404


def _documents(reply: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("documents", "knowledgeDocuments"):
        if key in reply:
            return list(reply[key])
    raise AssertionError(f"no documents in {reply}")


async def test_cancel_stops_the_episode(
    page: Page, api: httpx.AsyncClient, proxy: CuttableProxy
) -> None:
    await open_page(page)
    await create_project(page, "Cancel Me")
    await page.get_by_text("Advanced options").click()
    await page.get_by_label("Preferred model provider").select_option("synthetic")
    await page.get_by_label("No fallback to other providers").check()
    await page.get_by_label("Polish pass (dialogue, tension, twist)").check()
    generation = await start_episode(page, "Pilot")
    started = [
        head for head in proxy.requests() if re.match(r"post /v1/projects/\S+/generations", head)
    ]
    assert "x-preferred-provider: synthetic" in started[-1]
    assert "x-feature-flags: no-fallback,polish" in started[-1]
    await wait_for_length_above(page, 10)
    await page.get_by_role("button", name="Cancel", exact=True).click()
    await expect(page.locator("#live")).to_have_attribute("data-state", "cancelled")
    await expect(page.locator("#stage")).to_have_text("Cancelled. Nothing was saved.")
    await expect(page.get_by_role("button", name="Write episode")).to_be_enabled()
    job = (await api.get(f"/v1/{generation}")).json()
    assert job["state"] == "GENERATION_STATE_CANCELLED"
    await screenshot(page, "06-cancelled")


async def test_stream_resumes_after_a_cut_connection_without_repeating_text(
    page: Page, api: httpx.AsyncClient, proxy: CuttableProxy
) -> None:
    await open_page(page)
    await create_project(page, "Dropped Line")
    generation = await start_episode(page, "Pilot", "a heist goes wrong")
    await wait_for_length_above(page, 40)

    proxy.cut()
    await expect(page.locator("#connection")).to_contain_text("Reconnecting")
    cut_at = await script_length(page)
    # The job keeps writing while the link is down; let it get well ahead of the page.
    job_sequence = int((await api.get(f"/v1/{generation}")).json()["lastSequence"])
    await follow_until(api, generation, job_sequence + 15)
    assert await script_length(page) == cut_at
    await screenshot(page, "07-connection-lost")
    proxy.restore()

    await expect(page.locator("#live")).to_have_attribute("data-state", "completed")
    script = await saved_script(api, generation)
    assert await page.locator("#script-source").text_content() == script
    assert await page.locator("#live").get_attribute("data-corrected") is None
    assert await script_length(page) == len(script)
    resumed = [
        head
        for head in proxy.requests()
        if head.startswith(f"get /v1/{generation}/events")
        and re.search(r"^last-event-id: [1-9][0-9]*\r?$", head, re.MULTILINE)
    ]
    assert resumed, "EventSource did not resume with Last-Event-ID"
    await expect(page.locator("#connection")).to_be_hidden()
    await screenshot(page, "08-resumed-and-completed")


async def test_errors_are_clear_and_401_asks_for_a_key(page: Page) -> None:
    await open_page(page)
    await create_project(page, "Errors")

    # 400 from the server's own validation of the options, in its words.
    await page.get_by_label("Episode title").fill("Pilot")
    await page.get_by_text("Advanced options").click()
    await page.get_by_label("Preferred model provider").select_option("openai")
    await page.get_by_role("button", name="Write episode").click()
    await expect(page.locator("#notice")).to_contain_text("x-preferred-provider")
    await expect(page.locator("#live")).to_be_hidden()

    # 429 tells how long to wait.
    async def rate_limited(route: Route) -> None:
        await route.fulfill(
            status=429,
            headers={"Retry-After": "7", "Content-Type": "application/json"},
            body=json.dumps(
                {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down"}}
            ),
        )

    await page.route("**/v1/projects/*/generations", rate_limited)
    await page.get_by_label("Preferred model provider").select_option("")
    await page.get_by_role("button", name="Write episode").click()
    await expect(page.locator("#notice")).to_contain_text("Please wait 7 seconds")
    await page.unroute("**/v1/projects/*/generations")

    # 401: the sign-in form opens; the key then travels as a Bearer token.
    seen: list[str] = []

    async def unauthorized(route: Route) -> None:
        header = route.request.headers.get("authorization", "")
        seen.append(header)
        if header != "Bearer sk-test-123":
            await route.fulfill(
                status=401,
                headers={"Content-Type": "application/json"},
                body=json.dumps(
                    {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no key"}}
                ),
            )
        else:
            await route.continue_()

    await page.route("**/v1/projects?*", unauthorized)
    await page.reload()
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.get_by_label("API key")).to_be_focused()
    await screenshot(page, "09-sign-in")
    await page.get_by_label("API key").fill("sk-test-123")
    await page.get_by_label("API key").press("Enter")
    await expect(page.locator("#sign-in")).to_be_hidden()
    await expect(page.locator("#project-list li")).to_have_count(1)
    assert seen[-1] == "Bearer sk-test-123"
    assert await page.evaluate("sessionStorage.getItem('scriptgen.apiKey')") == "sk-test-123"
    await page.unroute("**/v1/projects?*")

    # 404: the project was deleted elsewhere while it is open here.
    await page.locator("#project-list button").first.click()
    name = await page.evaluate(
        """async () => {
             const reply = await (await fetch('/v1/projects')).json();
             const name = reply.projects[0].name;
             await fetch(`/v1/${name}`, {method: 'DELETE'});
             return name;
           }"""
    )
    await page.get_by_text("Edit project").click()
    await page.locator("#edit-project").get_by_label("Tone").fill("dark")
    await page.locator("#edit-project").get_by_role("button", name="Save changes").click()
    await expect(page.locator("#notice")).to_contain_text("Not found")
    await expect(page.locator("#notice")).to_contain_text(name.removeprefix("projects/"))
    await expect(page.locator("#project-list li")).to_have_count(0)
    await expect(page.locator("#welcome")).to_be_visible()

    # Offline: a clear message instead of a hang.
    await page.context.set_offline(True)
    await page.get_by_text("New project").click()
    await page.locator("#new-project").get_by_label("Title").fill("Offline")
    await page.locator("#new-project").get_by_role("button", name="Create project").click()
    await expect(page.locator("#notice")).to_contain_text("offline")
    await screenshot(page, "10-offline")
    await page.context.set_offline(False)


async def test_phone_width_and_keyboard(page: Page) -> None:
    await page.set_viewport_size({"width": 375, "height": 740})
    await open_page(page)
    await create_project(page, "Small Screen")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    # Keyboard: the skip link comes first and moves to the workspace.
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to the project")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#workspace")).to_be_focused()
    # Every form control has a label.
    unlabeled = await page.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
             .filter((c) => c.type !== 'hidden' && c.offsetParent !== null && c.labels.length === 0
                            && !c.getAttribute('aria-label'))
             .map((c) => c.id || c.name)"""
    )
    assert unlabeled == []
    # The address kept the open project through the reload.
    await expect(page.locator("#project-title")).to_have_text("Small Screen")
    await expect(page.locator("#notice")).to_be_hidden()
    await screenshot(page, "11-phone")


async def test_stream_reopens_itself_when_the_browser_gives_up(
    page: Page, api: httpx.AsyncClient, proxy: CuttableProxy
) -> None:
    """An HTTP error on reconnect ends EventSource; the page asks the job and reopens."""
    await open_page(page)
    await create_project(page, "Gateway Restart")
    generation = await start_episode(page, "Pilot")
    await wait_for_length_above(page, 40)

    async def unavailable(route: Route) -> None:
        await route.fulfill(
            status=503,
            headers={"Content-Type": "application/json"},
            body=json.dumps(
                {"error": {"code": 503, "status": "UNAVAILABLE", "message": "restarting"}}
            ),
        )

    await page.route("**/events*", unavailable)
    proxy.cut()
    await expect(page.locator("#live")).to_have_attribute("data-connection", "retrying")
    await page.unroute("**/events*")
    proxy.restore()

    await expect(page.locator("#live")).to_have_attribute("data-state", "completed")
    script = await saved_script(api, generation)
    assert await page.locator("#script-source").text_content() == script
    assert await page.locator("#live").get_attribute("data-corrected") is None
    reopened = [
        head
        for head in proxy.requests()
        if re.match(rf"get /v1/{generation}/events\?lasteventid=[1-9][0-9]* ", head)
    ]
    assert reopened, "the page did not reopen the stream after the last event it saw"


async def test_the_gateways_own_failed_event_is_a_lost_link_not_the_jobs_end(
    page: Page, api: httpx.AsyncClient, proxy: CuttableProxy
) -> None:
    """A `failed` event without a sequence is the gateway's (its link to the core broke,
    gateway/sse.py): the job may run on elsewhere, so the page asks it and reopens."""
    await open_page(page)
    await create_project(page, "Core Restart")
    generation = await start_episode(page, "Pilot")
    await wait_for_length_above(page, 40)
    answered = asyncio.Event()

    async def link_lost(route: Route) -> None:
        status = {"code": 14, "status": "UNAVAILABLE", "message": "The core went away."}
        payload = {"generation": generation, "failed": {"status": status}}
        await route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            body=f"retry: 500\n\nevent: failed\ndata: {json.dumps(payload)}\n\n",
        )
        answered.set()

    await page.route("**/events*", link_lost, times=1)
    proxy.cut()
    await asyncio.wait_for(answered.wait(), WAIT_MS / 1000)
    proxy.restore()

    await expect(page.locator("#live")).to_have_attribute("data-state", "completed")
    script = await saved_script(api, generation)
    assert await page.locator("#script-source").text_content() == script
