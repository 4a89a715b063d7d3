"""X-RateLimit-Limit / -Remaining / -Reset on every answer the rate limit counted.

A real gateway in front of a real core with keys on: JSON answers (2xx and
errors alike), SSE answers of GenerateScript and StreamGenerationEvents, and
job-token streams carry the key's window; answers the core never counted
(health, no key) carry none.
"""

from __future__ import annotations

import httpx
from grpc import aio

from server import Core
from tests.security.conftest import ROOMY

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
