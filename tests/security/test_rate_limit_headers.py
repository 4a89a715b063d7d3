"""X-RateLimit-Limit / -Remaining / -Reset on every answer the rate limit counted.

A real gateway in front of a real core with keys on: JSON answers (2xx and
errors alike), SSE answers of GenerateScript and StreamGenerationEvents, and
job-token streams carry the key's window; answers the core never counted
(health, no key) carry none.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
from grpc import aio

from gateway import GatewayServer
from server import Core, SyntheticConfig
from tests.gateway.conftest import gateway_config
from tests.security.conftest import ROOMY, make_key, secure_config

NAMES = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _window(response: httpx.Response) -> tuple[int, int, int]:
    limit, remaining, reset = (int(response.headers[name]) for name in NAMES)
    return limit, remaining, reset


def _counted(response: httpx.Response, limit: int) -> bool:
    """The key's window, after this call took a request (a token bucket: it refills meanwhile)."""
    found, remaining, reset = _window(response)
    return found == limit and 0 <= remaining < limit and 0 <= reset <= ROOMY.window_seconds


async def test_every_counted_answer_carries_the_window(
    secure_core: Core, channel: aio.Channel, alice_key: str, http: httpx.AsyncClient
) -> None:
    auth = {"Authorization": f"Bearer {alice_key}"}
    limit = ROOMY.requests_per_window

    created = await http.post("/v1/projects", json={"title": "Counted"}, headers=auth)
    assert created.status_code == 201
    assert _window(created)[:2] == (limit, limit - 1)
    listed = await http.get("/v1/projects", headers=auth)
    assert listed.status_code == 200 and _counted(listed, limit)
    # Errors the core decides after counting the call carry it too.
    missing = await http.get("/v1/projects/nothing-here", headers=auth)
    assert missing.status_code == 404 and _counted(missing, limit)
    invalid = await http.post("/v1/projects", json={"title": ""}, headers=auth)
    assert invalid.status_code == 400 and _counted(invalid, limit)

    # An SSE answer carries the window from the stream's initial metadata.
    project = created.json()["name"]
    async with http.stream(
        "POST",
        f"/v1/{project}/generations",
        json={"title": "Pilot"},
        headers={**auth, "Accept": "text/event-stream"},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert _counted(stream, limit)
        body = "".join([chunk async for chunk in stream.aiter_text()])
    assert "event: completed" in body
    generation = next(
        line.split('"generation":"')[1].split('"')[0]
        for line in body.splitlines()
        if line.startswith("data:")
    )
    async with http.stream(
        "GET", f"/v1/{generation}/events", headers={**auth, "Last-Event-ID": "1"}
    ) as resumed:
        assert resumed.status_code == 200
        assert _counted(resumed, limit)
        await resumed.aread()

    # Started detached: two core calls (the job, then its record); the latest window answers.
    detached = await http.post(f"/v1/{project}/generations", json={"title": "Two"}, headers=auth)
    assert detached.status_code == 201 and _counted(detached, limit)
    # A job token's stream is counted in a bucket of its own: its window, from its first call.
    events_url = detached.json()["eventsUrl"]
    async with http.stream("GET", events_url) as followed:
        assert followed.status_code == 200
        assert _window(followed)[:2] == (limit, limit - 1)
        await followed.aread()


async def test_answers_nobody_counted_carry_none(
    secure_core: Core, http: httpx.AsyncClient
) -> None:
    for response in (
        await http.get("/healthz"),
        await http.get("/v1/projects"),  # no key: refused before any counting
        await http.get("/v1/projects", headers={"Authorization": "Bearer sg_nope"}),
    ):
        assert not any(name in response.headers for name in NAMES), response.headers


async def test_the_gateway_over_capacity_says_when_to_retry_not_a_rate_window(
    tmp_path: Path,
) -> None:
    """OVER_CAPACITY is this gateway's own stream limit, not the key's rate: 429 with
    Retry-After, and no X-RateLimit-* (the core never saw, so never counted, the call)."""
    config = replace(
        secure_config(tmp_path / "core"),
        synthetic=SyntheticConfig(first_token_seconds=30.0, tokens_per_second=1.0),
    )
    core = Core(config)
    await core.start()
    gateway = GatewayServer(
        gateway_config(f"127.0.0.1:{core.grpc_port}", max_streams=1, first_event_wait_seconds=1)
    )
    await gateway.start()
    try:
        key = await make_key(core, "alice")
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=10, headers=auth
        ) as http:
            project = (await http.post("/v1/projects", json={"title": "Full"})).json()["name"]
            url = f"/v1/{project}/generations"
            sse = {"Accept": "text/event-stream"}
            async with http.stream("POST", url, json={"title": "A"}, headers=sse) as admitted:
                assert admitted.status_code == 200
                assert _counted(admitted, ROOMY.requests_per_window)
                refused = await http.post(url, json={"title": "B"}, headers=sse)
    finally:
        await gateway.stop()
        await core.stop(grace=0)
    assert refused.status_code == 429
    assert refused.json()["error"]["details"][0]["reason"] == "OVER_CAPACITY"
    assert int(refused.headers["Retry-After"]) >= 1
    assert not any(name in refused.headers for name in NAMES), refused.headers
