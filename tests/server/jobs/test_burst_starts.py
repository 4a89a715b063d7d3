"""In a burst of new jobs, every job is started (its `queued` sent) before any pipeline runs."""

from __future__ import annotations

import asyncio
import time

from grpc import aio
from scriptgen.v1 import generation_service_pb2

from server import Core
from server.jobs.arrivals import Arrivals
from tests.server.rpc import connect, read
from tests.sharing import MACHINE

pytestmark = MACHINE

gs = generation_service_pb2


async def test_pipelines_wait_until_the_burst_is_started(core: Core) -> None:
    # A quiet time far above the gaps between these starts, even on a slow machine; these
    # eight one after another count as a burst (one start within a minute makes one).
    core.runner.arrivals = Arrivals(
        quiet_seconds=1.0, max_defer_seconds=30.0, burst_starts=1, burst_window_seconds=60.0
    )
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        calls = []
        for number in range(8):
            call = rpc.generations.GenerateScript(
                gs.GenerateScriptRequest(parent=project.name, title=f"Episode {number}")
            )
            queued = await read(call)
            assert queued is not None and queued.event.WhichOneof("kind") == "queued"
            calls.append(call)
        last_started = time.monotonic()

        async def second_event(
            call: aio.UnaryStreamCall[gs.GenerateScriptRequest, gs.GenerateScriptResponse],
        ) -> tuple[float, str]:
            """When the job's first event after `queued` (heartbeats aside) came, and its kind."""
            while True:
                message = await read(call)
                assert message is not None
                kind = message.event.WhichOneof("kind")
                if kind != "heartbeat":
                    return time.monotonic(), str(kind)

        seconds = await asyncio.wait_for(asyncio.gather(*(second_event(c) for c in calls)), 30)
        assert {kind for _, kind in seconds} == {"stage_started"}
        # No pipeline ran before the pause after the last job's start.
        assert min(when for when, _ in seconds) >= last_started + 0.9
        for call in calls:
            call.cancel()
