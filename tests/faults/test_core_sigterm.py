"""Item 3: SIGTERM to a real `scriptgen server` process while 100 streams are open.

Health must turn NOT_SERVING while the listener still answers (a probe on a fresh
connection sees it), new jobs are refused, every open stream ends with exactly one
terminal event (Completed within the grace period, else Cancelled), the process
exits 0, and the store — read back by a new process on the same data directory —
holds exactly the episodes that were reported Completed, each whole.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from scriptgen.v1 import generation_pb2
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import project_service_pb2 as ps

from tests.replicas.cluster import CORE_LINE, Process, spawn
from tests.server.rpc import Stubs, connect, error_info, health_check, health_watch, read, script_of
from tests.sharing import MACHINE

pytestmark = MACHINE

STREAMS = 100
TERMINAL = {"completed", "failed", "cancelled"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _server(data_dir: Path, *extra: str) -> Process:
    return await spawn(
        "server",
        "--grpc-address=127.0.0.1:0",
        "--metrics-address=off",
        "--auth=disabled",
        f"--data-dir={data_dir}",
        "--heartbeat-seconds=1",
        *extra,
        pattern=CORE_LINE,
    )


@dataclass
class _Writing:
    """Counts streams that have received text; `all` is set once every stream has."""

    streams: int
    started: int = 0
    all: asyncio.Event = field(default_factory=asyncio.Event)

    def one_more(self) -> None:
        self.started += 1
        if self.started >= self.streams:
            self.all.set()


async def _stream(
    rpc: Stubs, parent: str, number: int, writing: _Writing
) -> list[generation_pb2.GenerationEvent]:
    request = gs.GenerateScriptRequest(parent=parent, title=f"Episode {number}")
    events: list[generation_pb2.GenerationEvent] = []
    seen_text = False
    async for response in rpc.generations.GenerateScript(request):
        events.append(response.event)
        if not seen_text and response.event.HasField("text_delta"):
            seen_text = True
            writing.one_more()
    return events


async def test_sigterm_with_100_open_streams_drains_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "core"
    core = await _server(
        data_dir,
        "--synthetic-first-token-seconds=0.05",
        "--synthetic-tokens-per-second=70",
        "--shutdown-grace-seconds=2.5",
    )
    try:
        async with connect(core.address) as rpc:
            project = await rpc.create_project()
            watch = health_watch(rpc.channel)(health_pb2.HealthCheckRequest(service=""))
            async with asyncio.timeout(10):
                first = await read(watch)
            assert first is not None and first.status == SERVING
            writing = _Writing(STREAMS)
            streams = [
                asyncio.create_task(_stream(rpc, project.name, number, writing))
                for number in range(STREAMS)
            ]
            await asyncio.wait_for(writing.all.wait(), 60)

            core.child.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                update = await read(watch)
            assert update is not None and update.status == NOT_SERVING
            # The listener is still open: a brand-new connection is answered, NOT_SERVING.
            async with aio.insecure_channel(core.address) as probe:
                status = await health_check(probe)(health_pb2.HealthCheckRequest(service=""))
                assert status.status == NOT_SERVING
            with pytest.raises(aio.AioRpcError) as refused:
                await rpc.generate(project.name, "Too late")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(refused.value).reason == "SHUTTING_DOWN"
            results = await asyncio.wait_for(asyncio.gather(*streams), 30)
        # Not Process.stop(): a second SIGTERM is not what is under test.
        assert await asyncio.wait_for(core.child.wait(), 30) == 0
    finally:
        if core.child.returncode is None:
            core.child.kill()
            await core.child.wait()

    completed: dict[str, str] = {}
    kinds_seen: dict[str, int] = {}
    for events in results:
        kinds = [e.WhichOneof("kind") for e in events]
        assert sum(k in TERMINAL for k in kinds) == 1 and kinds[-1] in TERMINAL, kinds[-3:]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        kinds_seen[str(kinds[-1])] = kinds_seen.get(str(kinds[-1]), 0) + 1
        if events[-1].HasField("completed"):
            episode = events[-1].completed.episode
            assert script_of(events) == episode.script
            completed[episode.name] = episode.script
        else:
            assert events[-1].HasField("cancelled"), events[-1]
    print(f"SIGTERM with {STREAMS} open streams: terminal events {kinds_seen}")

    # A new process on the same store: exactly the completed episodes, whole, numbered 1..n.
    reader = await _server(data_dir)
    try:
        async with connect(reader.address) as rpc:
            listed = await rpc.projects.ListEpisodes(
                ps.ListEpisodesRequest(parent=project.name, page_size=1000)
            )
            names = [e.name for e in listed.episodes]
            assert sorted(names) == sorted(completed)
            assert sorted(e.number for e in listed.episodes) == list(range(1, len(names) + 1))
            for name, script in completed.items():
                saved = await rpc.projects.GetEpisode(ps.GetEpisodeRequest(name=name))
                assert saved.episode.script == script
    finally:
        await reader.stop()
