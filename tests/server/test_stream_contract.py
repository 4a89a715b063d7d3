"""The stream contract of GenerateScript and StreamGenerationEvents against a real core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_service_pb2

from server import Core, SyntheticConfig
from server.jobs.watch import abandoned_reason
from tests.conftest import fast_core_config
from tests.server.rpc import Stubs, connect, error_info, read, script_of

TERMINAL = {"completed", "failed", "cancelled"}


async def test_sequences_are_contiguous_and_deltas_spell_the_saved_episode(
    core_target: str,
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name, "The Pilot", description="a heist goes wrong")

        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[0].WhichOneof("kind") == "queued"
        terminals = [e for e in events if e.WhichOneof("kind") in TERMINAL]
        assert len(terminals) == 1 and terminals[0] is events[-1]
        assert events[-1].HasField("completed")
        assert {e.generation for e in events} == {events[0].generation}

        saved = await rpc.projects.GetEpisode(
            project_service_pb2.GetEpisodeRequest(name=events[-1].completed.episode.name)
        )
        script = script_of(events)
        assert script == saved.episode.script == events[-1].completed.episode.script
        assert saved.episode.number == 1
        assert "INT." in script or "EXT." in script

        offset = 0
        for event in events:
            if event.HasField("text_delta"):
                assert event.text_delta.offset == offset
                offset += len(event.text_delta.text)


async def test_stages_are_announced_in_pipeline_order(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
    stages = [e.stage_started.stage for e in events if e.HasField("stage_started")]
    assert stages == [
        generation_pb2.STAGE_PLAN,
        generation_pb2.STAGE_WRITE,
        generation_pb2.STAGE_REVIEW,
        generation_pb2.STAGE_SAVE,
        generation_pb2.STAGE_INDEX,
    ]
    assert "synthetic" in events[0].queued.notice
    completed = events[-1].completed
    assert completed.usage[0].provider == "synthetic"
    assert completed.usage[0].output_tokens > 0
    assert completed.quality.scene_count == completed.episode.scene_count > 0
    assert list(completed.quality.cast) == list(completed.episode.cast)


async def test_resume_from_every_sequence_gives_exactly_the_rest(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
        name = events[0].generation
        for after in range(len(events) + 1):
            rest = await rpc.follow(name, after)
            assert [e.sequence for e in rest] == list(range(after + 1, len(events) + 1))
            assert [e.SerializeToString() for e in rest] == [
                e.SerializeToString() for e in events[after:]
            ]


async def test_resume_beyond_the_last_event_is_out_of_range(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.follow(events[0].generation, len(events) + 1)
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(raised.value).reason == "SEQUENCE_AHEAD"


@pytest.fixture
async def patient_core(tmp_path: Path) -> AsyncIterator[Core]:
    """A core whose jobs take about two seconds and are abandoned after 0.6 s without a reader."""
    config = replace(
        fast_core_config(tmp_path / "patient"),
        metrics_address=None,
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=150.0),
        abandon_after_seconds=0.6,
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.0)


async def _start_and_leave(rpc: Stubs, parent: str, *, detach: bool = False) -> str:
    request = generation_pb2_request(parent, "Detached")
    request.detach = detach
    call = rpc.generations.GenerateScript(request)
    first = await read(call)
    assert first is not None
    call.cancel()
    return first.event.generation


async def test_a_job_outlives_the_call_that_started_it_for_the_grace_period(
    patient_core: Core,
) -> None:
    async with connect(f"127.0.0.1:{patient_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        name = await _start_and_leave(rpc, project.name)
        await asyncio.sleep(0.3)  # shorter than the 0.6 s grace period
        rest = await asyncio.wait_for(rpc.follow(name, 1), 30)
    assert rest[-1].HasField("completed")
    assert [e.sequence for e in rest] == list(range(2, len(rest) + 2))


async def test_a_detached_job_needs_no_reader(patient_core: Core) -> None:
    async with connect(f"127.0.0.1:{patient_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        name = await _start_and_leave(rpc, project.name, detach=True)
        await asyncio.sleep(1.0)
        rest = await asyncio.wait_for(rpc.follow(name, 1), 30)
    assert rest[-1].HasField("completed")


async def test_a_job_nobody_follows_is_cancelled_once(patient_core: Core) -> None:
    async with connect(f"127.0.0.1:{patient_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        name = await _start_and_leave(rpc, project.name)
        await asyncio.sleep(1.0)
        events = await asyncio.wait_for(rpc.follow(name), 10)
        job = await rpc.generations.GetGeneration(
            generation_service_pb2.GetGenerationRequest(name=name)
        )
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[-1] == "cancelled" and sum(k in TERMINAL for k in kinds) == 1
    assert events[-1].cancelled.reason == abandoned_reason(0.6)
    assert job.generation.state == generation_pb2.GENERATION_STATE_CANCELLED


async def test_live_followers_see_the_same_events_as_the_starter(tmp_path: Path) -> None:
    config = replace(
        fast_core_config(tmp_path / "slow"),
        metrics_address=None,
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=800.0),
        # One delta per token (the naive path) keeps the stream long enough to follow live.
        delta_window_seconds=0.0,
    )
    slow = Core(config)
    await slow.start()
    try:
        async with connect(f"127.0.0.1:{slow.grpc_port}") as rpc:
            project = await rpc.create_project()
            call = rpc.generations.GenerateScript(generation_pb2_request(project.name, "Live"))
            first = await read(call)
            assert first is not None
            name = first.event.generation
            followers = [asyncio.create_task(rpc.follow(name, k)) for k in (0, 1)]
            starter = [first.event]
            while (response := await read(call)) is not None:
                starter.append(response.event)
            results = await asyncio.wait_for(asyncio.gather(*followers), 30)
        assert [e.SerializeToString() for e in results[0]] == [
            e.SerializeToString() for e in starter
        ]
        assert [e.sequence for e in results[1]] == [e.sequence for e in starter[1:]]
        assert len(starter) > 20 and starter[-1].HasField("completed")
    finally:
        await slow.stop()


async def test_korean_project_is_written_in_korean(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project("밤의 기록", language="ko")
        events = await rpc.generate(project.name, "첫 번째 밤")
    script = script_of(events)
    assert any("\uac00" <= ch <= "\ud7a3" for ch in script)
    assert events[-1].completed.episode.cast
    assert all(not name.startswith("@") for name in events[-1].completed.episode.cast)


async def test_episode_numbers_are_unique_and_consecutive_under_concurrency(
    core_target: str,
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        runs = await asyncio.gather(*(rpc.generate(project.name, f"Ep {i}") for i in range(8)))
    numbers = sorted(run[-1].completed.episode.number for run in runs)
    assert numbers == list(range(1, 9))


def generation_pb2_request(parent: str, title: str) -> generation_service_pb2.GenerateScriptRequest:
    return generation_service_pb2.GenerateScriptRequest(parent=parent, title=title)
