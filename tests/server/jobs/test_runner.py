"""The job runner's cancellation: right after `queued`, while starting, even when swallowed once.

The start-up tests run a runner of their own on the test core's store and
providers, with an in-memory log that acts when `queued` is appended (as a
reader who sees it and cancels at once) or refuses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_pb2, project_service_pb2

from server import Core
from server.errors import Unavailable
from server.events import MemoryEventLog
from server.jobs import JobRunner
from server.jobs import runner as runner_module
from server.jobs.registry import MemoryJobRegistry
from server.jobs.runner import CANCEL_ATTEMPTS, RECANCEL_AFTER_SECONDS
from tests.gateway.conftest import eventually
from tests.server.rpc import connect, read

gs = generation_service_pb2
ps = project_service_pb2
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


OnQueued = Callable[[str], Awaitable[None]]


class QueuedHookLog(MemoryEventLog):
    """An in-memory log that calls `on_queued(name)` once a job's `queued` event is in."""

    def __init__(self) -> None:
        super().__init__()
        self.on_queued: OnQueued | None = None
        self.refuse_queued = False

    def append_now(self, event: generation_pb2.GenerationEvent) -> bool:
        return False  # every append goes through `append` below, which may wait

    async def append(self, event: generation_pb2.GenerationEvent) -> None:
        if event.HasField("queued") and self.refuse_queued:
            if self.on_queued is not None:
                await self.on_queued(event.generation)
            raise Unavailable("the event log is down", reason="REDIS_UNAVAILABLE")
        await super().append(event)
        if event.HasField("queued") and self.on_queued is not None:
            await self.on_queued(event.generation)


def _runner(core: Core, log: QueuedHookLog) -> JobRunner:
    return JobRunner(
        config=core.config,
        store=core.store,
        log=log,
        registry=MemoryJobRegistry(),
        router=core.router,
        providers=core.providers,
        metrics=core.metrics,
    )


async def _request(core: Core) -> gs.GenerateScriptRequest:
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
    return gs.GenerateScriptRequest(parent=project.name, title="Right Away")


async def _kinds(log: MemoryEventLog, name: str) -> list[str | None]:
    kinds: list[str | None] = []
    async with asyncio.timeout(10):
        async for event in log.follow(name, 0):
            kinds.append(event.WhichOneof("kind"))
    return kinds


async def test_a_cancel_as_soon_as_queued_is_read_cancels_the_job(core: Core) -> None:
    log = QueuedHookLog()
    runner = _runner(core, log)
    cancels: list[asyncio.Task[generation_pb2.Generation]] = []

    async def cancel_at_once(name: str) -> None:
        cancels.append(asyncio.create_task(runner.cancel(name)))
        await asyncio.sleep(0)  # the cancel looks for the job before start() goes on

    log.on_queued = cancel_at_once
    name = await runner.start(await _request(core))
    async with asyncio.timeout(10):
        cancelled = await cancels[0]
    assert cancelled.state == generation_pb2.GENERATION_STATE_CANCELLED
    kinds = await _kinds(log, name)
    assert kinds[0] == "queued" and [k for k in kinds if k in TERMINAL] == ["cancelled"]
    assert kinds[-1] == "cancelled"
    assert runner.running == 0


async def test_a_queued_event_the_log_refuses_leaves_nothing_running(core: Core) -> None:
    log = QueuedHookLog()
    log.refuse_queued = True
    runner = _runner(core, log)
    cancels: list[asyncio.Task[generation_pb2.Generation]] = []
    names: list[str] = []

    async def cancel_meanwhile(name: str) -> None:
        names.append(name)
        cancels.append(asyncio.create_task(runner.cancel(name)))
        await asyncio.sleep(0)

    log.on_queued = cancel_meanwhile
    with pytest.raises(Unavailable):
        await runner.start(await _request(core))
    assert runner.running == 0
    assert not await runner.coordination.owner_alive(names[0])  # the claim is released
    # The cancel that came meanwhile does not wait for a job that will never run: it ends it.
    async with asyncio.timeout(RECANCEL_AFTER_SECONDS):
        cancelled = await cancels[0]
    assert cancelled.state == generation_pb2.GENERATION_STATE_CANCELLED
    assert await _kinds(log, names[0]) == ["cancelled"]


async def test_drain_waits_for_a_job_still_being_started(core: Core) -> None:
    log = QueuedHookLog()
    runner = _runner(core, log)
    drains: list[asyncio.Task[None]] = []

    async def drain_meanwhile(name: str) -> None:
        drains.append(asyncio.create_task(runner.drain(grace_seconds=10.0)))
        await asyncio.sleep(0)

    log.on_queued = drain_meanwhile
    name = await runner.start(await _request(core))
    async with asyncio.timeout(15):
        await drains[0]
    assert runner.running == 0  # drained: not started after the drain was over
    kinds = await _kinds(log, name)
    assert [k for k in kinds if k in TERMINAL] == ["completed"]


class StuckEndLog(QueuedHookLog):
    """An in-memory log on which a job's `cancelled` event hangs until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def append(self, event: generation_pb2.GenerationEvent) -> None:
        if event.HasField("cancelled"):
            await self.release.wait()
        await super().append(event)


async def test_shutdown_stops_waiting_for_a_job_stuck_writing_its_end(
    core: Core, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Past the first re-cancel's wait: the job is then seen writing its end, and waited for.
    monkeypatch.setattr(runner_module, "SHUTDOWN_CANCEL_SECONDS", RECANCEL_AFTER_SECONDS + 0.5)
    log = StuckEndLog()
    runner = _runner(core, log)
    name = await runner.start(await _request(core))
    began = asyncio.get_running_loop().time()
    # No grace: the job is cancelled at once, and its end never gets into the log.
    async with asyncio.timeout(RECANCEL_AFTER_SECONDS + 5):
        await runner.drain(grace_seconds=0.0)
    # The bound, with room for a slow machine: not forever.
    assert asyncio.get_running_loop().time() - began < RECANCEL_AFTER_SECONDS + 0.5 + 1.0
    assert runner.running == 1
    assert "shutdown: 1 jobs did not end after their cancellation (waited up to 1.5s)" in (
        caplog.text
    )
    assert f"{name} (writing its end)" in caplog.text
    log.release.set()  # the log comes back: the job still writes its one end
    kinds = await _kinds(log, name)
    await eventually(lambda: runner.running == 0, "its clean-up, after its end is in the log")
    assert [k for k in kinds if k in TERMINAL] == ["cancelled"]


@dataclass
class SlowIndexKnowledge:
    """Story knowledge that finds nothing and takes `seconds` to index an episode."""

    seconds: float
    indexing: asyncio.Event = field(default_factory=asyncio.Event)

    async def retrieve(self, project_id: str, query: str, *, token_budget: int) -> list[object]:
        return []

    async def index_episode(self, project_id: str, episode: project_pb2.Episode) -> None:
        self.indexing.set()
        await asyncio.sleep(self.seconds)


@pytest.mark.parametrize(
    ("index_seconds", "note"),
    [(3600.0, "not indexed: the server is shutting down"), (0.3, "indexed projects/")],
    ids=["endless-dropped", "quick-kept"],
)
async def test_at_shutdown_a_job_indexing_its_saved_episode_completes(
    core: Core, monkeypatch: pytest.MonkeyPatch, index_seconds: float, note: str
) -> None:
    """Within SHUTDOWN_INDEX_SECONDS its indexing finishes; past them it is dropped. Either
    way the job completes: it is never cut off as if nothing had been saved."""
    monkeypatch.setattr(runner_module, "SHUTDOWN_INDEX_SECONDS", 1.0)
    knowledge = SlowIndexKnowledge(index_seconds)
    core.runner.knowledge = knowledge  # type: ignore[assignment]
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Saved")
        )
        async with asyncio.timeout(30):
            await knowledge.indexing.wait()
        began = asyncio.get_running_loop().time()
        await core.runner.drain(grace_seconds=0.0)
        # Well within the bound for the jobs left (10 s), with room for a slow machine.
        assert asyncio.get_running_loop().time() - began < 5.0
        events = []
        while (message := await read(call)) is not None:
            events.append(message.event)
        episodes = await rpc.projects.ListEpisodes(ps.ListEpisodesRequest(parent=project.name))
    kinds = [e.WhichOneof("kind") for e in events]
    assert [k for k in kinds if k in TERMINAL] == ["completed"]
    notes = [e.progress.message for e in events if e.WhichOneof("kind") == "progress"]
    assert any(n.startswith(note) for n in notes), notes
    assert [e.name for e in episodes.episodes] == [events[-1].completed.episode.name]


@pytest.mark.parametrize(
    ("index_seconds", "wait_seconds", "answered"),
    [
        (2.0, 0.3, generation_pb2.GENERATION_STATE_RUNNING),
        (0.3, 5.0, generation_pb2.GENERATION_STATE_SUCCEEDED),
    ],
    ids=["slow-index-answers-running", "quick-index-answers-succeeded"],
)
async def test_a_cancel_of_a_job_saving_its_episode_waits_a_bounded_time(
    core: Core,
    monkeypatch: pytest.MonkeyPatch,
    index_seconds: float,
    wait_seconds: float,
    answered: generation_pb2.GenerationState.ValueType,
) -> None:
    """A job that has saved its episode is not cut short by a cancel. CancelGeneration waits
    up to CANCEL_WAIT_SECONDS for it: the job SUCCEEDED, or RUNNING past the wait (it then
    completes all the same) — never an answer held as long as indexing takes."""
    monkeypatch.setattr(runner_module, "CANCEL_WAIT_SECONDS", wait_seconds)
    knowledge = SlowIndexKnowledge(index_seconds)
    core.runner.knowledge = knowledge  # type: ignore[assignment]
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Saved", detach=True)
        )
        first = await read(call)
        assert first is not None
        name = first.event.generation
        async with asyncio.timeout(30):
            await knowledge.indexing.wait()
        loop = asyncio.get_running_loop()
        began = loop.time()
        response = await rpc.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        waited = loop.time() - began
        assert response.generation.state == answered
        # Answered after the job ended or the wait ran out, whichever came first.
        assert waited < min(index_seconds, wait_seconds) + 1.5
        events = [first.event]
        while (message := await read(call)) is not None:
            events.append(message.event)
        job = await rpc.generations.GetGeneration(gs.GetGenerationRequest(name=name))
    kinds = [e.WhichOneof("kind") for e in events]
    assert [k for k in kinds if k in TERMINAL] == ["completed"]
    assert job.generation.state == generation_pb2.GENERATION_STATE_SUCCEEDED
