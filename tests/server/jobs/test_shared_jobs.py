"""Two cores sharing Redis and PostgreSQL: resume, cancel and abandonment across replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_service_pb2

from server import Core, SyntheticConfig
from server.jobs.watch import abandoned_reason
from tests.backends.postgres import fresh_database
from tests.conftest import fast_core_config
from tests.server.rpc import Stubs, connect, error_info, read, script_of
from tests.sharing import MACHINE

pytestmark = MACHINE

gs = generation_service_pb2
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
async def cores(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> AsyncIterator[tuple[Core, Core]]:
    """Cores A and B on one Redis prefix and one PostgreSQL database; a 150 tokens/s writer."""
    async with fresh_database(postgres_url) as database_url:
        running: list[Core] = []
        try:
            for name in ("a", "b"):
                config = replace(
                    fast_core_config(tmp_path / name),
                    metrics_address=None,
                    database_url=database_url,
                    redis_url=redis_url,
                    redis_key_prefix=redis_prefix,
                    synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=150.0),
                    abandon_after_seconds=0.6,
                    owner_lease_seconds=1.0,
                )
                core = Core(config)
                await core.start()
                running.append(core)
            yield running[0], running[1]
        finally:
            for core in running:
                await core.stop(grace=0.0)


def target(core: Core) -> str:
    return f"127.0.0.1:{core.grpc_port}"


async def start(rpc: Stubs, parent: str, *, detach: bool = False) -> tuple[str, object]:
    call = rpc.generations.GenerateScript(
        gs.GenerateScriptRequest(parent=parent, title="Across", detach=detach)
    )
    first = await read(call)
    assert first is not None
    return first.event.generation, call


async def test_resume_on_another_core_gives_exactly_the_rest(cores: tuple[Core, Core]) -> None:
    a, b = cores
    async with connect(target(a)) as on_a, connect(target(b)) as on_b:
        project = await on_b.create_project()
        call = on_a.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Across")
        )
        seen: list[generation_pb2.GenerationEvent] = []
        while len(seen) < 15 and (response := await read(call)) is not None:
            seen.append(response.event)
        name = seen[0].generation
        # Live, on B, from the last event A delivered; and from several other places.
        followers = [
            asyncio.create_task(on_b.follow(name, after)) for after in (seen[-1].sequence, 0, 3)
        ]
        call.cancel()
        results = await asyncio.wait_for(asyncio.gather(*followers), 30)
        everything = await on_b.follow(name)
        saved = await on_b.projects.GetEpisode(
            project_service_pb2.GetEpisodeRequest(name=everything[-1].completed.episode.name)
        )
    wire = [e.SerializeToString() for e in everything]
    assert [e.sequence for e in everything] == list(range(1, len(everything) + 1))
    assert [e.SerializeToString() for e in seen] == wire[: len(seen)]
    for after, rest in zip((seen[-1].sequence, 0, 3), results, strict=True):
        assert [e.SerializeToString() for e in rest] == wire[after:]
    assert sum(e.WhichOneof("kind") in TERMINAL for e in everything) == 1
    assert script_of(seen + results[0]) == saved.episode.script


async def test_errors_of_resume_are_the_same_on_every_core(cores: tuple[Core, Core]) -> None:
    a, b = cores
    async with connect(target(a)) as on_a, connect(target(b)) as on_b:
        project = await on_a.create_project()
        events = await on_a.generate(project.name)
        with pytest.raises(aio.AioRpcError) as ahead:
            await on_b.follow(events[0].generation, len(events) + 1)
        with pytest.raises(aio.AioRpcError) as unknown:
            await on_b.follow("generations/gexpiredlongago")
        listed = await on_b.generations.ListGenerations(
            gs.ListGenerationsRequest(parent=project.name)
        )
    assert ahead.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(ahead.value).reason == "SEQUENCE_AHEAD"
    assert error_info(ahead.value).metadata["last_sequence"] == str(len(events))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown.value).reason == "GENERATION_NOT_FOUND"
    assert [g.name for g in listed.generations] == [events[0].generation]
    assert listed.generations[0].state == generation_pb2.GENERATION_STATE_SUCCEEDED
    assert listed.generations[0].last_sequence == len(events)


async def test_cancel_from_another_core_stops_the_job_within_a_second(
    cores: tuple[Core, Core],
) -> None:
    a, b = cores
    async with connect(target(a)) as on_a, connect(target(b)) as on_b:
        project = await on_a.create_project()
        name, _ = await start(on_a, project.name)
        follower = asyncio.create_task(on_a.follow(name))
        await asyncio.sleep(0.3)
        asked = time.monotonic()
        cancelled = await on_b.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        took = time.monotonic() - asked
        again = await on_a.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        events = await asyncio.wait_for(follower, 10)
        episodes = await on_b.projects.ListEpisodes(
            project_service_pb2.ListEpisodesRequest(parent=project.name)
        )
    assert took < 1.0
    assert cancelled.generation.state == generation_pb2.GENERATION_STATE_CANCELLED
    assert again.generation == cancelled.generation
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[-1] == "cancelled" and sum(k in TERMINAL for k in kinds) == 1
    assert events[-1].cancelled.reason == "cancelled by request"
    assert a.runner.running == 0
    assert not episodes.episodes


async def test_an_unread_job_is_abandoned_but_a_reader_on_another_core_keeps_it(
    cores: tuple[Core, Core],
) -> None:
    a, b = cores
    async with connect(target(a)) as on_a, connect(target(b)) as on_b:
        project = await on_a.create_project()
        kept, kept_call = await start(on_a, project.name)
        dropped, dropped_call = await start(on_a, project.name)
        detached, detached_call = await start(on_a, project.name, detach=True)
        for call in (kept_call, dropped_call, detached_call):
            call.cancel()  # type: ignore[attr-defined]
        kept_events = await asyncio.wait_for(on_b.follow(kept, 1), 30)
        await asyncio.sleep(1.0)
        dropped_events = await asyncio.wait_for(on_b.follow(dropped), 10)
        detached_events = await asyncio.wait_for(on_b.follow(detached), 30)
    assert kept_events[-1].HasField("completed")
    assert detached_events[-1].HasField("completed")
    assert dropped_events[-1].cancelled.reason == abandoned_reason(0.6)
    assert sum(e.WhichOneof("kind") in TERMINAL for e in dropped_events) == 1
