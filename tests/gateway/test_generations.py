"""Generation jobs over REST and SSE: the event-stream contract, resume, 201 flow, cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from aiohttp.test_utils import TestClient

from server import SyntheticConfig
from tests.gateway.conftest import CoreFactory, serve_gateway
from tests.gateway.frames import dispatched, read_sse, script_of, sequences, split_blocks

Client = TestClient[Any, Any]
TERMINAL = {"completed", "failed", "cancelled"}
SSE = {"Accept": "text/event-stream"}


async def _project(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/projects", json={"title": "Night Shift"})
    assert response.status_code == 201
    name: str = response.json()["name"]
    return name


async def test_event_stream_contract_over_tcp(http: httpx.AsyncClient) -> None:
    project = await _project(http)
    events = await read_sse(
        http, f"/v1/{project}/generations", method="POST", json={"title": "Pilot"}, headers=SSE
    )
    assert events[0].retry == 1500  # `retry:` comes first, before any event
    assert events[0].data == ""
    real = dispatched(events)
    numbers = sequences(events)
    assert numbers == list(range(1, len(numbers) + 1)), "ids must be 1..n without gaps"
    assert real[0].event == "queued"
    names = [event.event for event in real]
    assert sum(name in TERMINAL for name in names) == 1
    assert names[-1] == "completed"
    assert {"stage", "delta"} <= set(names)
    for event in real:
        payload = json.loads(event.data)
        assert int(payload["sequence"]) == int(event.id)
        assert payload["generation"] == json.loads(real[0].data)["generation"]

    completed = json.loads(real[-1].data)["completed"]
    episode = (await http.get(f"/v1/{completed['episode']['name']}")).json()
    assert episode["script"]
    assert script_of(events) == episode["script"]


async def test_resume_after_last_event_id_gives_exactly_the_rest(http: httpx.AsyncClient) -> None:
    project = await _project(http)
    started = await http.post(f"/v1/{project}/generations", json={"title": "Pilot"})
    events_url = started.json()["eventsUrl"]
    everything = await read_sse(http, events_url)
    total = sequences(everything)[-1]
    for k in (1, total // 2, total - 1):
        by_header = await read_sse(http, events_url, headers={"Last-Event-ID": str(k)})
        assert sequences(by_header) == list(range(k + 1, total + 1))
        assert [e.data for e in dispatched(by_header)] == [e.data for e in dispatched(everything)][
            k:
        ]
    by_query = await read_sse(http, f"{events_url}?lastEventId={total - 3}")
    assert sequences(by_query) == [total - 2, total - 1, total]
    # Nothing after the terminal event: 204 tells EventSource to stop reconnecting.
    after_end = await http.get(events_url, headers={"Last-Event-ID": str(total)})
    assert after_end.status_code == 204
    ahead = await http.get(events_url, headers={"Last-Event-ID": str(total + 10)})
    assert ahead.status_code == 400
    assert ahead.json()["error"]["status"] == "OUT_OF_RANGE"


async def test_raw_stream_framing_is_exact(http: httpx.AsyncClient) -> None:
    project = await _project(http)
    async with http.stream(
        "POST", f"/v1/{project}/generations", json={"title": "Pilot"}, headers=SSE
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        raw = (await response.aread()).decode()
    blocks = split_blocks(raw)
    assert blocks[0].lines == ["retry: 1500"]
    for block in blocks[1:]:
        assert block.lines[0].startswith("id: ")
        assert block.lines[1].startswith("event: ")
        assert block.lines[2].startswith("data: {")
        assert len(block.lines) == 3


async def test_start_answers_201_with_the_job_and_its_events_url(client: Client) -> None:
    created = await client.post("/v1/projects", json={"title": "Night Shift"})
    project = (await created.json())["name"]
    response = await client.post(
        f"/v1/{project}/generations",
        json={"title": "Pilot", "description": "Maya hears a voice.", "requestId": "pilot-1"},
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    job = body["generation"]
    assert job["name"].startswith("generations/")
    assert job["parent"] == project
    assert job["title"] == "Pilot"
    assert job["requestId"] == "pilot-1"
    assert body["eventsUrl"] == f"/v1/{job['name']}/events"
    assert response.headers["Location"] == f"/v1/{job['name']}"

    # The job outlives the call the gateway cancelled after its first event.
    for _ in range(200):
        fetched = await (await client.get(f"/v1/{job['name']}")).json()
        if fetched["state"] == "GENERATION_STATE_SUCCEEDED":
            break
        await asyncio.sleep(0.05)
    assert fetched["state"] == "GENERATION_STATE_SUCCEEDED"
    assert fetched["episode"] == f"{project}/episodes/1"

    listed = await (await client.get(f"/v1/{project}/generations")).json()
    assert [generation["name"] for generation in listed["generations"]] == [job["name"]]

    again = await client.post(
        f"/v1/{project}/generations",
        json={"title": "Pilot", "description": "Maya hears a voice.", "requestId": "pilot-1"},
    )
    assert (await again.json())["generation"]["name"] == job["name"]


async def test_delete_project_with_episodes_needs_force(client: Client) -> None:
    created = await client.post("/v1/projects", json={"title": "Night Shift"})
    project = (await created.json())["name"]
    started = await client.post(f"/v1/{project}/generations", json={"title": "Pilot"})
    events = await client.get((await started.json())["eventsUrl"])
    assert "event: completed" in await events.text()

    episodes = await (await client.get(f"/v1/{project}/episodes")).json()
    assert [episode["number"] for episode in episodes["episodes"]] == [1]
    refused = await client.delete(f"/v1/{project}")
    assert refused.status == 400
    assert (await refused.json())["error"]["status"] == "FAILED_PRECONDITION"
    forced = await client.delete(f"/v1/{project}?force=true")
    assert forced.status == 200
    assert (await client.get(f"/v1/{project}")).status == 404


async def test_episode_delete(client: Client) -> None:
    created = await client.post("/v1/projects", json={"title": "Night Shift"})
    project = (await created.json())["name"]
    started = await client.post(f"/v1/{project}/generations", json={"title": "Pilot"})
    await (await client.get((await started.json())["eventsUrl"])).text()
    assert (await client.delete(f"/v1/{project}/episodes/1")).status == 200
    assert (await client.get(f"/v1/{project}/episodes/1")).status == 404


async def test_errors_before_the_first_byte_are_http_errors(client: Client) -> None:
    missing_project = await client.post(
        "/v1/projects/p-missing/generations", json={"title": "Pilot"}, headers=SSE
    )
    assert missing_project.status == 404
    assert missing_project.headers["Content-Type"].startswith("application/json")
    missing_job = await client.get("/v1/generations/g-missing/events")
    assert missing_job.status == 404
    assert (await missing_job.json())["error"]["status"] == "NOT_FOUND"
    invalid = await client.post("/v1/projects/p-missing/generations", json={}, headers=SSE)
    assert invalid.status in {400, 404}


async def test_cancel_ends_a_live_job_with_one_cancelled_event(start_core: CoreFactory) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=20.0))
    async with serve_gateway(f"127.0.0.1:{core.grpc_port}") as http:
        project = await _project(http)
        started = await http.post(
            f"/v1/{project}/generations", json={"title": "Pilot", "detach": True}
        )
        job = started.json()["generation"]["name"]
        cancelled = await http.post(f"/v1/{job}:cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["name"] == job
        events = await read_sse(http, started.json()["eventsUrl"])
        names = [event.event for event in dispatched(events)]
        assert names[-1] == "cancelled"
        assert sum(name in TERMINAL for name in names) == 1
        final = (await http.get(f"/v1/{job}")).json()
        assert final["state"] == "GENERATION_STATE_CANCELLED"
        # Cancelling an ended job is idempotent.
        again = await http.post(f"/v1/{job}:cancel", json={})
        assert again.json()["state"] == "GENERATION_STATE_CANCELLED"
