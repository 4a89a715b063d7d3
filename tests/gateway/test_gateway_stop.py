"""A stopping gateway: readiness first, then every stream ends so its client goes elsewhere.

Each test stops a real gateway (on a real core) while a stream is in a state the drain
must handle: a reader waiting for a job's next event, or a new job's stream whose first
event has not come yet.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import grpc.aio
import httpx
from scriptgen.v1 import generation_pb2, generation_service_pb2, generation_service_pb2_grpc

from gateway import GatewayServer
from server import SyntheticConfig
from tests.clients.tcp_proxy import TcpProxy
from tests.gateway.conftest import CoreFactory, gateway_config
from tests.gateway.frames import split_blocks

SSE = {"Accept": "text/event-stream"}
#: The tests' `sse_retry_ms` (tests.gateway.conftest.gateway_config).
RETRY_MS = 1500
#: A writer that thinks for 30 s before its first token; with heartbeats 30 s apart too, a
#: reader of its job waits for its next event for the whole test.
THINKING = SyntheticConfig(first_token_seconds=30.0, tokens_per_second=0.0)


def _retries(body: str) -> list[int]:
    return [int(value) for value in re.findall(r"^retry: (\d+)$", body, flags=re.MULTILINE)]


async def _project(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/projects", json={"title": "Night Shift"})
    name: str = response.json()["name"]
    return name


async def _thinking_job(http: httpx.AsyncClient) -> str:
    """A detached job of a new project, on a core whose writer thinks before it writes."""
    project = await _project(http)
    started = await http.post(f"/v1/{project}/generations", json={"title": "Pilot", "detach": True})
    name: str = started.json()["generation"]["name"]
    return name


async def _quiet_point(http: httpx.AsyncClient, generation: str) -> int:
    """The sequence of the job's last event once its log has been quiet for a second: the
    writer then thinks for 30 s (its model call in the plan stage), with nothing to log."""
    sequence = 0
    async with http.stream("GET", f"/v1/{generation}/events") as response:
        lines = response.aiter_lines()
        while True:
            try:
                async with asyncio.timeout(1.0):
                    line = await anext(lines)
            except TimeoutError:
                return sequence
            if line.startswith("id: "):
                sequence = int(line.removeprefix("id: "))


async def test_a_stream_still_waiting_for_its_first_event_ends_with_200_and_a_spread_retry(
    start_core: CoreFactory,
) -> None:
    # The writer thinks for 30 s: a reader resuming at the job's last event waits.
    core = await start_core(THINKING, heartbeat_seconds=30.0)
    server = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}", drain_seconds=5.0))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            generation = await _thinking_job(http)
            thinking = await _quiet_point(http, generation)
            follow = asyncio.create_task(
                http.get(f"/v1/{generation}/events", headers={"Last-Event-ID": str(thinking)})
            )
            await asyncio.sleep(0.5)  # the request waits in the gateway for its first event
            assert not follow.done()
            began = time.monotonic()
            await server.stop()
            response = await follow
    finally:
        await server.stop()
    # Not 204, which would stop a plain EventSource from reconnecting for good.
    assert response.status_code == 200
    assert time.monotonic() - began < 3.0, "the drain must not wait for the job's next event"
    blocks = split_blocks(response.text)
    assert [block.lines[0].split(":")[0] for block in blocks] == ["retry", "retry"]
    opening, last = _retries(response.text)
    assert opening == RETRY_MS
    assert RETRY_MS * 0.5 <= last <= RETRY_MS * 1.5


async def test_the_retries_of_drained_streams_are_spread(start_core: CoreFactory) -> None:
    core = await start_core(THINKING, heartbeat_seconds=30.0)
    server = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}", drain_seconds=5.0))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            generation = await _thinking_job(http)
            follows = [asyncio.create_task(http.get(f"/v1/{generation}/events")) for _ in range(8)]
            await asyncio.sleep(0.5)
            await server.stop()
            bodies = [(await follow).text for follow in follows]
    finally:
        await server.stop()
    last_retries = {_retries(body)[-1] for body in bodies}
    # Eight draws from 750..2250 ms: all equal would mean no spread (odds about 1e-21).
    assert len(last_retries) > 1
    assert all(body.count("event: queued") == 1 for body in bodies)


async def test_a_new_jobs_stream_draining_before_its_first_event_answers_with_the_job(
    start_core: CoreFactory,
) -> None:
    # The core's answers are held back (a TCP proxy stalls them) while the gateway begins
    # to stop: the new job's stream waits for its first event, which names the job, so the
    # client can follow it on another gateway; then it ends.
    core = await start_core(THINKING, heartbeat_seconds=30.0)
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    server = GatewayServer(gateway_config(proxy.target, drain_seconds=5.0))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            project = await _project(http)
            proxy.stall()
            post = asyncio.create_task(
                http.post(
                    f"/v1/{project}/generations",
                    json={"title": "Pilot", "detach": True},
                    headers=SSE,
                )
            )
            await asyncio.sleep(0.3)  # the job's open has gone to the core
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.3)  # the drain has begun, before the job's first event
            assert not post.done() and not stopping.done()
            began = time.monotonic()
            proxy.flow()
            response = await post
            await stopping
    finally:
        await server.stop()
        await proxy.stop()
    assert time.monotonic() - began < 3.0, "the drain must not wait for the job's next event"
    assert response.status_code == 200, response.text
    queued = re.search(r"^event: queued\ndata: (.*)$", response.text, flags=re.MULTILINE)
    assert queued is not None, response.text
    generation = json.loads(queued.group(1))["generation"]
    assert RETRY_MS * 0.5 <= _retries(response.text)[-1] <= RETRY_MS * 1.5
    # The job was started, and runs on without this gateway.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.grpc_port}") as channel:
        reply = await generation_service_pb2_grpc.GenerationServiceStub(channel).GetGeneration(
            generation_service_pb2.GetGenerationRequest(name=generation)
        )
    assert reply.generation.state == generation_pb2.GENERATION_STATE_RUNNING


async def test_readiness_turns_503_at_once_and_requests_are_served_during_the_stop_delay(
    start_core: CoreFactory,
) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=10.0))
    server = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}", stop_delay_seconds=1.5))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            for _ in range(100):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/readyz")).status_code == 200
            began = time.monotonic()
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.1)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["Retry-After"] == "1"
            assert ready.json() == {"status": "stopping"}
            # Still served: load balancers may send a little more before they see the 503.
            assert (await http.post("/v1/projects", json={"title": "Late"})).status_code == 201
            await stopping
            assert time.monotonic() - began >= 1.5
            try:
                await http.get("/readyz")
            except httpx.ConnectError:
                pass
            else:
                raise AssertionError("the listener must be closed after the stop")
    finally:
        await server.stop()


async def test_a_second_stop_waits_for_the_first(start_core: CoreFactory) -> None:
    core = await start_core(THINKING)
    server = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}", stop_delay_seconds=1.0))
    await server.start()
    began = time.monotonic()
    first = asyncio.create_task(server.stop())
    await asyncio.sleep(0.1)
    await server.stop()  # e.g. a test's `finally`, or a second signal's path
    assert time.monotonic() - began >= 1.0
    assert first.done()
    first.cancel()  # a caller cancelled after the stop is done changes nothing
    await server.stop()
