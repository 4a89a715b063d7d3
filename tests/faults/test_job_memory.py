"""Item 9's memory criterion in small: many jobs through a real core must not grow its heap.

A real core (in this process, so tracemalloc sees it) runs WARMUP jobs, then
MEASURED more; the Python heap growth across the measured jobs, per job, must
stay under a small bound, and the in-memory event log and job registry must
hold no more finished jobs than `finished_jobs_kept`. Before the retention
bound, every finished job kept its whole event log and record (~100 KB a job).
Native memory (embedded Chroma's index, SQLite, gRPC) is outside tracemalloc:
`make soak` measures resident memory of a real core process.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from dataclasses import replace
from pathlib import Path

from server import Core
from server.events.memory import MemoryEventLog
from server.jobs.registry import MemoryJobRegistry
from tests.conftest import fast_core_config
from tests.server.rpc import Stubs, connect
from tests.sharing import MACHINE

pytestmark = MACHINE

KEPT = 20
WARMUP = 60
MEASURED = 150
#: Bytes of Python heap a job may leave behind after warm-up. Measured ~2 KB, nearly all
#: transient (this test's own finished gather tasks, JSON scanners awaiting collection);
#: a finished job's kept event log and record alone were ~100 KB before the bound.
BOUND_PER_JOB = 4096


async def _jobs(rpc: Stubs, parents: list[str], first: int, count: int) -> None:
    slots = asyncio.Semaphore(8)

    async def one(number: int) -> None:
        async with slots:
            events = await rpc.generate(parents[number % len(parents)], title=f"Episode {number}")
            assert events[-1].HasField("completed"), events[-1]

    await asyncio.gather(*(one(n) for n in range(first, first + count)))


async def test_finished_jobs_leave_no_heap_behind(tmp_path: Path) -> None:
    config = replace(fast_core_config(tmp_path / "core"), finished_jobs_kept=KEPT)
    core = Core(replace(config, metrics_address=None))
    await core.start()
    try:
        async with connect(f"127.0.0.1:{core.grpc_port}") as rpc, asyncio.timeout(240):
            # Many projects: retrieval reads every episode summary of a project, so one
            # project with hundreds of episodes would measure that instead.
            parents = [(await rpc.create_project(f"Memory {n}")).name for n in range(40)]
            # Traced from the start: the kept finished jobs' logs (serialized events, on the
            # Python heap) are then in `before` too, so only what stays beyond them counts.
            tracemalloc.start(1)
            try:
                await _jobs(rpc, parents, 0, WARMUP)
                gc.collect()
                before = tracemalloc.take_snapshot()
                await _jobs(rpc, parents, WARMUP, MEASURED)
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
    finally:
        await core.stop(grace=0.0)
    stats = after.compare_to(before, "lineno")
    growth = sum(stat.size_diff for stat in stats)
    top = "\n".join(str(stat) for stat in stats[:8])
    print(f"\nheap growth after warm-up: {growth / MEASURED:.0f} B/job over {MEASURED} jobs")
    assert growth / MEASURED < BOUND_PER_JOB, top
    assert isinstance(core.event_log, MemoryEventLog)
    assert isinstance(core.registry, MemoryJobRegistry)
    assert core.event_log.finished_kept <= KEPT
    assert core.registry.finished_kept <= KEPT
