"""The job runner's cancellation: it takes effect even when the job swallows it once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from scriptgen.v1 import generation_pb2, generation_service_pb2, project_pb2

from server import Core
from server.jobs.runner import CANCEL_ATTEMPTS, RECANCEL_AFTER_SECONDS
from tests.server.rpc import connect, read

gs = generation_service_pb2
TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class StubbornKnowledge:
    """Story knowledge whose retrieval swallows the first cancellation, then goes on planning.

    That is what Python 3.11's `asyncio.wait_for` does when the call it waits for
    returns in the loop iteration the cancellation comes in (redis-py still uses it).
    """

    retrieving: asyncio.Event = field(default_factory=asyncio.Event)
    swallowed: int = 0

    async def index_episode(self, project_id: str, episode: project_pb2.Episode) -> None:
        return None

    async def retrieve(self, project_id: str, query: str, *, token_budget: int) -> list[object]:
        self.retrieving.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed += 1
        await asyncio.sleep(3600)  # the plan stage goes on
        return []


async def test_a_job_that_swallows_its_cancellation_is_cancelled_again(core: Core) -> None:
    knowledge = StubbornKnowledge()
    core.runner.knowledge = knowledge  # type: ignore[assignment]
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Stubborn")
        )
        queued = await read(call)
        assert queued is not None
        name = queued.event.generation
        async with asyncio.timeout(10):
            await knowledge.retrieving.wait()
        # Well before the runner gives up re-cancelling: the second cancellation lands.
        async with asyncio.timeout(RECANCEL_AFTER_SECONDS * CANCEL_ATTEMPTS):
            response = await rpc.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        assert response.generation.state == generation_pb2.GENERATION_STATE_CANCELLED
        assert knowledge.swallowed == 1
        events = [queued.event]
        while (message := await read(call)) is not None:
            events.append(message.event)
    ends = [e for e in events if e.WhichOneof("kind") in TERMINAL]
    assert [e.WhichOneof("kind") for e in ends] == ["cancelled"]
    assert ends[0] is events[-1] and ends[0].cancelled.reason == "cancelled by request"
    assert core.runner.running == 0
