"""The stream contract of GenerateScript and StreamGenerationEvents against a real core."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_service_pb2

from server import Core, SyntheticConfig
from tests.conftest import fast_core_config
from tests.server.rpc import connect, error_info, read, script_of

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


async def test_a_job_outlives_the_call_that_started_it(core: Core, core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(generation_pb2_request(project.name, "Detached"))
        first = await read(call)
        assert first is not None
        call.cancel()
        name = first.event.generation
        rest = await rpc.follow(name, 1)
    assert rest[-1].HasField("completed")
    assert [e.sequence for e in rest] == list(range(2, len(rest) + 2))


async def test_live_followers_see_the_same_events_as_the_starter(tmp_path: Path) -> None:
    config = replace(
        fast_core_config(tmp_path / "slow"),
        metrics_address=None,
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=800.0),
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
