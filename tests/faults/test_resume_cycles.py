"""Item 6: 1000 random disconnect/resume cycles across 20 concurrent jobs.

Each reader starts its job with GenerateScript, then 50 times drops the stream
after a random number of events (0-6) — by cancelling the call, or by closing
its whole connection (one time in four) — and resumes with
StreamGenerationEvents from the last sequence it saw; at the end it reads to
the terminal event. The reassembled events must be exactly 1..n with no gap or
duplicate and one terminal event, and the deltas must spell the saved episode.
The seed is printed; SCRIPTGEN_FAULT_SEED replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2_grpc,
    project_service_pb2_grpc,
)
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import project_service_pb2 as ps

from server import Core, SyntheticConfig
from tests.conftest import fast_core_config
from tests.server.rpc import connect, read, script_of
from tests.sharing import MACHINE

pytestmark = MACHINE

JOBS = 20
CYCLES_PER_JOB = 50  # 1000 in all
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
async def paced_core(tmp_path: Path) -> AsyncIterator[Core]:
    """A core at 150 tokens/s, one TextDelta per token: jobs of a few seconds, ~300 events."""
    config = replace(
        fast_core_config(tmp_path / "core"),
        metrics_address=None,
        synthetic=SyntheticConfig(first_token_seconds=0.01, tokens_per_second=150.0),
        delta_window_seconds=0.0,
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.0)


async def _one_connection(
    target: str,
    request: gs.GenerateScriptRequest | gs.StreamGenerationEventsRequest,
    drop_after: int | None,
    close_channel: bool,
) -> list[generation_pb2.GenerationEvent]:
    """Events read on one fresh connection: `drop_after` of them (None: to the end)."""
    channel = aio.insecure_channel(target)
    received: list[generation_pb2.GenerationEvent] = []
    try:
        generations = generation_service_pb2_grpc.GenerationServiceStub(channel)
        call: aio.UnaryStreamCall[Any, Any] = (
            generations.GenerateScript(request)
            if isinstance(request, gs.GenerateScriptRequest)
            else generations.StreamGenerationEvents(request)
        )
        while drop_after is None or len(received) < drop_after:
            async with asyncio.timeout(10):
                response = await read(call)
            if response is None:
                break
            received.append(response.event)
        if not close_channel:
            call.cancel()
    finally:
        # Closing with the call still open is the abrupt drop: the connection goes away.
        await channel.close(grace=None)
    return received


async def _reader(
    target: str, parent: str, number: int, rng: random.Random
) -> tuple[list[generation_pb2.GenerationEvent], int]:
    """The job's events, reassembled, and how many drops came before its terminal event."""
    events: list[generation_pb2.GenerationEvent] = []
    mid_job = 0
    start = gs.GenerateScriptRequest(parent=parent, title=f"Episode {number}")
    for cycle in range(CYCLES_PER_JOB + 1):
        drop_after = rng.randint(0, 6) if cycle < CYCLES_PER_JOB else None
        if cycle == 0 and drop_after == 0:
            drop_after = 1  # the job's name comes with its first event
        request: gs.GenerateScriptRequest | gs.StreamGenerationEventsRequest = (
            start
            if not events
            else gs.StreamGenerationEventsRequest(
                name=events[0].generation, after_sequence=events[-1].sequence
            )
        )
        if events and events[-1].WhichOneof("kind") in TERMINAL and drop_after is None:
            break
        running = not events or events[-1].WhichOneof("kind") not in TERMINAL
        events += await _one_connection(target, request, drop_after, rng.random() < 0.25)
        ended = events[-1].WhichOneof("kind") in TERMINAL
        mid_job += running and not ended and drop_after is not None
    return events, mid_job


async def test_1000_random_disconnects_reassemble_every_saved_script(paced_core: Core) -> None:
    seed = int(os.environ.get("SCRIPTGEN_FAULT_SEED", "11"))
    print(f"resume cycles: seed {seed}, {JOBS} jobs x {CYCLES_PER_JOB} disconnects")
    target = f"127.0.0.1:{paced_core.grpc_port}"
    async with connect(target) as rpc:
        project = await rpc.create_project()
        rngs = [random.Random(seed * 1000 + number) for number in range(JOBS)]
        results = await asyncio.wait_for(
            asyncio.gather(*(_reader(target, project.name, n, rngs[n]) for n in range(JOBS))),
            150,
        )
        projects = project_service_pb2_grpc.ProjectServiceStub(rpc.channel)
        mid_job = sum(drops for _, drops in results)
        print(f"resume cycles: {mid_job} of {JOBS * CYCLES_PER_JOB} drops while the job ran")
        assert mid_job >= JOBS * CYCLES_PER_JOB // 2
        for events, _ in results:
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            kinds = [e.WhichOneof("kind") for e in events]
            assert sum(k in TERMINAL for k in kinds) == 1
            assert events[-1].HasField("completed"), events[-1]
            saved = await projects.GetEpisode(
                ps.GetEpisodeRequest(name=events[-1].completed.episode.name)
            )
            assert script_of(events) == saved.episode.script != ""
