"""A real core's refusals: the limits on new jobs never refuse a repeat of a running job's
request (its request_id re-attaches), a refusal the core explains is retried no sooner than
its RetryInfo asks and comes out typed, and a resume refused OVER_CAPACITY waits its turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from scriptgen import (
    Client,
    ClientConfig,
    GenerationStream,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
)
from scriptgen.v1 import generation_pb2, generation_service_pb2

from server import Core, SyntheticConfig
from tests.clients.conftest import TEST_RETRY
from tests.clients.tcp_proxy import TcpProxy
from tests.conftest import CoreFactory
from tests.gateway.conftest import eventually, sample

#: A writer slow enough (a couple of seconds an episode) to refuse things while it runs.
SLOW = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=80.0)


def _target(core: Core) -> str:
    return f"127.0.0.1:{core.grpc_port}"


def _assert_whole(events: list[generation_pb2.GenerationEvent]) -> None:
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert events[-1].WhichOneof("kind") == "completed"


async def _read(stream: GenerationStream, events: list[generation_pb2.GenerationEvent]) -> None:
    async with asyncio.timeout(30):
        async for event in stream:
            events.append(event)


@pytest.fixture
async def full_core(start_core: CoreFactory) -> Core:
    """A slow core that runs one job at a time."""
    return await start_core(SLOW, max_running_jobs=1)


@pytest.fixture
async def full_client(full_core: Core) -> AsyncIterator[Client]:
    async with Client(_target(full_core), ClientConfig(retry=TEST_RETRY)) as opened:
        yield opened


async def test_a_full_core_refuses_a_new_job_but_not_a_repeat_of_its_running_one(
    full_client: Client,
) -> None:
    project = await full_client.create_project(title="One At A Time")
    async with full_client.generate(project.name, "Pilot", request_id="pilot-1") as first:
        queued = await anext(first)
        started = time.monotonic()
        with pytest.raises(ResourceExhaustedError) as raised:
            await full_client.generate(project.name, "Another", request_id="other-1").collect()
        assert raised.value.reason == "TOO_MANY_JOBS"
        assert time.monotonic() - started < 1, "a first call's refusal is raised at once"
        async with full_client.generate(project.name, "Pilot", request_id="pilot-1") as again:
            events = [event async for event in again]
    assert {event.generation for event in events} == {queued.generation}
    _assert_whole(events)
    page = await full_client.list_generations(project.name)
    assert [job.name for job in page.generations] == [queued.generation]


async def test_a_stopping_core_still_reattaches_a_repeat_of_its_running_job(
    full_core: Core, full_client: Client
) -> None:
    project = await full_client.create_project(title="Last Orders")
    async with full_client.generate(project.name, "Pilot", request_id="pilot-1") as first:
        queued = await anext(first)
        full_core.runner.stop_accepting()
        async with full_client.generate(project.name, "Pilot", request_id="pilot-1") as again:
            events = [event async for event in again]
    assert {event.generation for event in events} == {queued.generation}
    _assert_whole(events)


async def test_a_core_refusing_new_jobs_is_retried_after_its_retry_info_then_raised_typed(
    core: Core, client: Client
) -> None:
    project = await client.create_project(title="Closed For The Night")
    core.runner.stop_accepting()  # GenerateScript: UNAVAILABLE SHUTTING_DOWN, RetryInfo 1 s
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    async with Client(_target(core), ClientConfig(retry=retry)) as patient:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as raised:
            await patient.generate(project.name, "Pilot").collect()
        waited = time.monotonic() - started
    assert raised.value.reason == "SHUTTING_DOWN"
    assert raised.value.retry_delay is not None
    assert waited >= 0.9, "the one retry waited for the core's RetryInfo"


async def test_a_resume_refused_over_capacity_waits_for_the_slot_and_goes_on(
    start_core: CoreFactory,
) -> None:
    core = await start_core(SLOW, max_streams=1)
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    # Patient enough to outlast the link's absence and the refusals on a loaded machine
    # (up to ~20 s below), where TEST_RETRY gives up after ~8 s.
    patient = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.3)
    config = ClientConfig(retry=patient, stream_idle_timeout=5.0, max_reconnect_backoff=0.3)
    refused = "scriptgen_rate_limit_rejections_total"  # OVER_CAPACITY counts here
    events: list[generation_pb2.GenerationEvent] = []
    try:
        async with (
            Client(_target(core), ClientConfig(retry=TEST_RETRY)) as direct,
            Client(proxy.target, config) as proxied,
        ):
            project = await direct.create_project(title="Full House")
            async with proxied.generate(project.name, "Pilot") as stream:
                async with asyncio.timeout(10):
                    while len(events) < 5:
                        events.append(await anext(stream))
                reading = asyncio.create_task(_read(stream, events))
                await proxy.stop()  # the link is gone; the stream keeps trying to resume
                # Another reader takes the core's one stream slot once the dead call let go.
                async with asyncio.timeout(10):
                    while True:
                        holder = direct.follow(stream.name, after_sequence=stream.last_sequence)
                        try:
                            await anext(holder)
                            break
                        except ResourceExhaustedError:  # a first call: raised at once
                            await holder.aclose()
                            await asyncio.sleep(0.05)
                before = sample(core, refused, {"limit": "streams"})
                await proxy.start(proxy.port)
                await eventually(
                    lambda: sample(core, refused, {"limit": "streams"}) > before,
                    "the resume to reach the core and be refused",
                    seconds=10,
                )
                await holder.aclose()  # the slot is free again before the RetryInfo's 1 s
                await reading
    finally:
        await proxy.stop()
    _assert_whole(events)
    assert stream.resumes >= 2


async def test_a_repeat_during_its_first_start_waits_for_it_even_as_the_core_stops(
    core: Core, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first GenerateScript is still starting (its project read held back) when its
    # repeat comes and the core stops taking new jobs: the repeat is that job, not refused.
    project = await client.create_project(title="Half Open")
    read_project = core.store.get_project
    release = asyncio.Event()

    async def held_back(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await read_project(*args, **kwargs)

    monkeypatch.setattr(core.store, "get_project", held_back)
    request = generation_service_pb2.GenerateScriptRequest(
        parent=project.name, title="Pilot", request_id="pilot-1"
    )
    first = asyncio.create_task(core.runner.start(request))
    await asyncio.sleep(0.1)
    core.runner.stop_accepting()
    repeat = asyncio.create_task(core.runner.start(request))
    await asyncio.sleep(0.1)
    assert not repeat.done(), "the repeat waits for its first start"
    release.set()
    assert await repeat == await first
