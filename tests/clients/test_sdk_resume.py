"""generate()/follow() across real broken links: a TCP proxy between client and core is cut,
stalled and restarted while the job runs in the core, and the stream must still deliver every
event exactly once, in order, with the script equal to the saved episode's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from scriptgen import (
    Client,
    ClientConfig,
    GenerationStream,
    RetryPolicy,
    ScriptAssembler,
    StreamInterruptedError,
)
from scriptgen.v1 import generation_pb2, project_pb2

from tests.clients.conftest import TEST_RETRY
from tests.clients.tcp_proxy import TcpProxy


@pytest.fixture
async def proxy(slow_target: str) -> AsyncIterator[TcpProxy]:
    host, _, port = slow_target.rpartition(":")
    running = TcpProxy(host, int(port))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def proxied_client(proxy: TcpProxy) -> AsyncIterator[Client]:
    config = ClientConfig(retry=TEST_RETRY, stream_idle_timeout=0.5, max_reconnect_backoff=0.3)
    async with Client(proxy.target, config) as opened:
        yield opened


@pytest.fixture
async def slow_project(slow_client: Client) -> project_pb2.Project:
    return await slow_client.create_project(title="Harbour Lights")


async def _read_until(
    stream: GenerationStream,
    events: list[generation_pb2.GenerationEvent],
    deltas: int,
) -> None:
    async with asyncio.timeout(20):
        async for event in stream:
            events.append(event)
            if sum(e.WhichOneof("kind") == "text_delta" for e in events) >= deltas:
                return
    last = events[-1].WhichOneof("kind") if events else "nothing"
    raise AssertionError(f"the job ended ({last}) before the link could be broken")


async def _read_rest(
    stream: GenerationStream, events: list[generation_pb2.GenerationEvent]
) -> None:
    async with asyncio.timeout(30):
        async for event in stream:
            events.append(event)


async def _assert_whole(
    events: list[generation_pb2.GenerationEvent], direct: Client
) -> generation_pb2.GenerationEvent:
    """Sequences 1..n without a hole or repeat, and the script equals the saved episode's."""
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert events[0].WhichOneof("kind") == "queued"
    assert {event.generation for event in events} == {events[0].generation}
    terminal = events[-1]
    assert terminal.WhichOneof("kind") == "completed"
    assembler = ScriptAssembler()
    for event in events:
        assembler.feed(event)
    saved = await direct.get_episode(terminal.completed.episode.name)
    assert saved.script
    assert assembler.script == saved.script == terminal.completed.episode.script
    return terminal


async def test_generate_resumes_after_the_proxy_dies_and_comes_back(
    proxy: TcpProxy,
    proxied_client: Client,
    slow_client: Client,
    slow_project: project_pb2.Project,
) -> None:
    events: list[generation_pb2.GenerationEvent] = []
    async with proxied_client.generate(slow_project.name, "Pilot") as stream:
        await _read_until(stream, events, deltas=20)
        before = events[-1].sequence

        await proxy.stop()  # every connection aborted, nothing listening
        await asyncio.sleep(0.4)
        await proxy.start(proxy.port)

        await _read_rest(stream, events)
        assert stream.resumes >= 1
        assert stream.finished

    assert events[-1].sequence > before + 1, "events after the break were delivered"
    assert proxy.connections >= 2
    terminal = await _assert_whole(events, slow_client)
    job = await slow_client.get_generation(terminal.generation)
    assert job.state == generation_pb2.GENERATION_STATE_SUCCEEDED
    assert job.last_sequence == terminal.sequence


async def test_generate_resumes_when_the_link_goes_silent(
    proxy: TcpProxy,
    proxied_client: Client,
    slow_client: Client,
    slow_project: project_pb2.Project,
) -> None:
    events: list[generation_pb2.GenerationEvent] = []
    async with proxied_client.generate(slow_project.name, "Pilot") as stream:
        await _read_until(stream, events, deltas=10)
        proxy.stall()  # the connection stays up; nothing reaches the client
        await asyncio.sleep(1.6)  # three idle timeouts of 0.5 s
        silent_at = len(events)
        proxy.flow()
        await _read_rest(stream, events)
        assert stream.resumes >= 1

    assert len(events) > silent_at
    await _assert_whole(events, slow_client)


async def test_retry_before_the_first_event_reattaches_to_the_same_job(
    proxy: TcpProxy,
    proxied_client: Client,
    slow_client: Client,
    slow_project: project_pb2.Project,
) -> None:
    await proxied_client.get_project(slow_project.name)  # the HTTP/2 link is up
    proxy.stall()
    events: list[generation_pb2.GenerationEvent] = []
    async with proxied_client.generate(slow_project.name, "Pilot") as stream:
        reader = asyncio.create_task(_read_rest(stream, events))
        # The request reached the core and the job runs, but no event reached the client.
        started = time.monotonic()
        jobs: list[generation_pb2.Generation] = []
        while not jobs:
            assert time.monotonic() - started < 10, "the job never started"
            await asyncio.sleep(0.05)
            page = await slow_client.list_generations(slow_project.name)
            jobs = [job for job in page.generations if job.request_id == stream.request_id]
        assert events == []
        await proxy.sever()
        proxy.flow()
        await reader

    assert stream.resumes >= 1
    await _assert_whole(events, slow_client)
    assert events[0].generation == jobs[0].name
    page = await slow_client.list_generations(slow_project.name)
    same_key = [job.name for job in page.generations if job.request_id == stream.request_id]
    assert same_key == [jobs[0].name], "the retry started no second job"


async def test_follow_resumes_after_the_proxy_dies(
    proxy: TcpProxy,
    proxied_client: Client,
    slow_client: Client,
    slow_project: project_pb2.Project,
) -> None:
    async with slow_client.generate(slow_project.name, "Pilot", detach=True) as started:
        first = await anext(started)
    events: list[generation_pb2.GenerationEvent] = [first]
    async with proxied_client.follow(first.generation, after_sequence=1) as stream:
        await _read_until(stream, events, deltas=10)
        await proxy.stop()
        await asyncio.sleep(0.3)
        await proxy.start(proxy.port)
        await _read_rest(stream, events)
        assert stream.resumes >= 1
    await _assert_whole(events, slow_client)


async def test_a_link_that_never_comes_back_ends_in_stream_interrupted(
    proxy: TcpProxy, slow_client: Client, slow_project: project_pb2.Project
) -> None:
    config = ClientConfig(
        retry=RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.1),
        stream_idle_timeout=5.0,
    )
    async with Client(proxy.target, config) as client:
        stream = client.generate(slow_project.name, "Pilot")
        events: list[generation_pb2.GenerationEvent] = []
        await _read_until(stream, events, deltas=3)
        await proxy.stop()
        started = time.monotonic()
        with pytest.raises(StreamInterruptedError) as raised:
            await _read_rest(stream, events)
        assert time.monotonic() - started < 10
    assert raised.value.generation == events[0].generation
    assert raised.value.last_sequence == events[-1].sequence
    # The job is not the link: it keeps running in the core and can be followed again.
    async with slow_client.follow(events[0].generation, events[-1].sequence) as again:
        rest = [event async for event in again]
    await _assert_whole(events + rest, slow_client)
