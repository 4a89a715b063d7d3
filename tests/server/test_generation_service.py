"""GenerationService against a real core: validation, idempotency, get, list, cancel, heartbeats."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_service_pb2

from server import Core, SyntheticConfig
from tests.conftest import fast_core_config
from tests.server.rpc import Stubs, connect, error_info, field_violations, read
from tests.sharing import MACHINE

pytestmark = MACHINE

gs = generation_service_pb2


@pytest.fixture
async def slow_core(tmp_path: Path) -> AsyncIterator[Core]:
    """A core whose writer takes its time: 1.2 s to the first token, then 50 tokens/s."""
    config = replace(
        fast_core_config(tmp_path / "slow"),
        synthetic=SyntheticConfig(first_token_seconds=1.2, tokens_per_second=50.0),
        heartbeat_seconds=0.3,
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.0)


async def _start(rpc: Stubs, parent: str, title: str) -> str:
    call = rpc.generations.GenerateScript(gs.GenerateScriptRequest(parent=parent, title=title))
    first = await read(call)
    assert first is not None
    call.cancel()
    return first.event.generation


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"parent": "", "title": "T"}, "parent"),
        ({"parent": "projects/", "title": "T"}, "parent"),
        ({"parent": "shows/x", "title": "T"}, "parent"),
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "T", "description": "x" * 5001}, "description"),
        ({"title": "T", "request_id": "has space"}, "request_id"),
        ({"title": "T", "request_id": "x" * 101}, "request_id"),
    ],
)
async def test_bad_generate_requests_name_the_field(
    core_target: str, fields: dict[str, str], field: str
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        request = {"parent": project.name, **fields}
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.generate(**request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(raised.value)


async def test_generating_for_a_missing_project_is_not_found(core_target: str) -> None:
    async with connect(core_target) as rpc:
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.generate("projects/nope")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "PROJECT_NOT_FOUND"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (gs.StreamGenerationEventsRequest(name="jobs/x"), "name"),
        (
            gs.StreamGenerationEventsRequest(name="generations/x", after_sequence=-1),
            "after_sequence",
        ),
    ],
)
async def test_bad_stream_requests(
    core_target: str, request_: gs.StreamGenerationEventsRequest, field: str
) -> None:
    async with connect(core_target) as rpc:
        with pytest.raises(aio.AioRpcError) as raised:
            async for _ in rpc.generations.StreamGenerationEvents(request_):
                pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(raised.value)


async def test_unknown_generation_is_not_found_everywhere(core_target: str) -> None:
    name = "generations/gdoesnotexist"
    async with connect(core_target) as rpc:
        for call in (
            lambda: rpc.generations.GetGeneration(gs.GetGenerationRequest(name=name)),
            lambda: rpc.generations.CancelGeneration(gs.CancelGenerationRequest(name=name)),
            lambda: rpc.follow(name),
        ):
            with pytest.raises(aio.AioRpcError) as raised:
                await call()
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert error_info(raised.value).reason == "GENERATION_NOT_FOUND"


async def test_same_request_id_same_job_different_request_refused(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        first = await rpc.generate(project.name, "Pilot", request_id="key-1")
        again = await rpc.generate(project.name, "Pilot", request_id="key-1")
        assert [e.SerializeToString() for e in again] == [e.SerializeToString() for e in first]
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.generate(project.name, "Another", request_id="key-1")
        listing = await rpc.generations.ListGenerations(
            gs.ListGenerationsRequest(parent=project.name)
        )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(raised.value).reason == "REQUEST_ID_REUSED"
    assert len(listing.generations) == 1


async def test_get_and_list_report_state_episode_and_last_sequence(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        other = await rpc.create_project("Other")
        runs = [await rpc.generate(project.name, f"Ep {i}") for i in range(3)]
        await rpc.generate(other.name)
        job = (
            await rpc.generations.GetGeneration(gs.GetGenerationRequest(name=runs[0][0].generation))
        ).generation
        assert job.state == generation_pb2.GENERATION_STATE_SUCCEEDED
        assert job.last_sequence == runs[0][-1].sequence
        assert job.episode == runs[0][-1].completed.episode.name
        assert job.parent == project.name

        names: list[str] = []
        token = ""
        while True:
            page = await rpc.generations.ListGenerations(
                gs.ListGenerationsRequest(parent=project.name, page_size=2, page_token=token)
            )
            names.extend(g.name for g in page.generations)
            token = page.next_page_token
            if not token:
                break
        everything = await rpc.generations.ListGenerations(gs.ListGenerationsRequest())
    assert names == [run[0].generation for run in reversed(runs)]
    assert len(everything.generations) == 4


async def test_cancel_ends_the_stream_with_one_cancelled_event_and_is_idempotent(
    slow_core: Core,
) -> None:
    async with connect(f"127.0.0.1:{slow_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        name = await _start(rpc, project.name, title="Doomed")
        follower = asyncio.create_task(rpc.follow(name))
        await asyncio.sleep(0.1)
        cancelled = await rpc.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        assert cancelled.generation.state == generation_pb2.GENERATION_STATE_CANCELLED
        again = await rpc.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        assert again.generation == cancelled.generation
        events = await asyncio.wait_for(follower, 10)
        episodes = await rpc.projects.ListEpisodes(
            project_service_pb2.ListEpisodesRequest(parent=project.name)
        )
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[-1] == "cancelled"
    assert sum(k in {"completed", "failed", "cancelled"} for k in kinds) == 1
    assert events[-1].cancelled.reason == "cancelled by request"
    assert not episodes.episodes


async def test_cancel_of_a_finished_job_returns_it_unchanged(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
        response = await rpc.generations.CancelGeneration(
            gs.CancelGenerationRequest(name=events[0].generation)
        )
    assert response.generation.state == generation_pb2.GENERATION_STATE_SUCCEEDED


async def test_an_idle_job_keeps_no_timer_task_of_its_own_between_heartbeats(
    slow_core: Core,
) -> None:
    """Heartbeats come from a loop timer and readers' leases from one sweep: between two
    heartbeats a quiet job and its stream hold no heartbeat or reader task."""
    async with connect(f"127.0.0.1:{slow_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Quiet")
        )
        beats: list[float] = []
        between: list[list[str]] = []
        async for response in call:
            if response.event.HasField("heartbeat"):
                beats.append(asyncio.get_running_loop().time())
                await asyncio.sleep(0.1)  # the beat's short task has finished
                between.append(
                    [
                        name
                        for t in asyncio.all_tasks()
                        # Per job or stream (the one sweep of the process is "reader presence").
                        if (name := t.get_name()).startswith(("heartbeat ", "reader generations/"))
                    ]
                )
            if len(beats) == 3 or response.event.HasField("text_delta"):
                call.cancel()
                break
    assert len(beats) == 3  # 1.2 s to the first token, a heartbeat every 0.3 s
    assert all(0.25 <= later - earlier <= 0.6 for earlier, later in itertools.pairwise(beats))
    assert between == [[], [], []]


async def test_an_idle_job_sends_heartbeats_with_sequences(slow_core: Core) -> None:
    async with connect(f"127.0.0.1:{slow_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        events: list[generation_pb2.GenerationEvent] = []
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Slow")
        )
        async for response in call:
            events.append(response.event)
            if response.event.HasField("text_delta"):
                call.cancel()
                break
    kinds = [e.WhichOneof("kind") for e in events]
    assert "heartbeat" in kinds[: kinds.index("text_delta")]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
