"""The coalescer's end of a stream: a cancelled job stays cancelled while a timed cut is out."""

from __future__ import annotations

import asyncio
import time

from scriptgen.v1 import generation_pb2

from server.events import MemoryEventLog
from server.jobs.coalescer import EARLY_SECONDS, DeltaCoalescer
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics

GENERATION = "generations/gcoalescecancel"


class GatedLog(MemoryEventLog):
    """An in-memory log whose appends after the first wait until `gate` opens (a slow Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.held = asyncio.Event()
        self.appends = 0

    def append_now(self, event: generation_pb2.GenerationEvent) -> bool:
        return False  # every append goes through `append` below, which may wait

    async def append(self, event: generation_pb2.GenerationEvent) -> None:
        self.appends += 1
        if self.appends > 1:
            self.held.set()
            await self.gate.wait()
        await super().append(event)


async def test_cancelling_close_while_a_timed_cut_appends_cancels_the_caller() -> None:
    log = GatedLog()
    await log.create(GENERATION)
    deltas = DeltaCoalescer(JobEvents(GENERATION, log, CoreMetrics(), 0), window_seconds=0.05)
    await deltas.add("INT. ROOF - NIGHT\n")  # the first chunk: appended at once
    await deltas.add("Maya waits.\n")  # cut by the window's timer, in a task of its own
    async with asyncio.timeout(5):
        await log.held.wait()
    closing = asyncio.create_task(deltas.close())  # the write stage ends: waits for that cut
    await asyncio.sleep(0.05)
    closing.cancel()  # CancelGeneration, meanwhile
    await asyncio.wait({closing}, timeout=5)
    try:
        assert closing.cancelled(), (
            f"the job's cancellation was swallowed: close() {closing!r}"
            if closing.done()
            else "close() is still waiting"
        )
    finally:
        deltas.abort()
        log.gate.set()
        await asyncio.sleep(0)


class TaskNotingLog(MemoryEventLog):
    """An in-memory log that notes, per append, whether it ran inside a task."""

    def __init__(self) -> None:
        super().__init__()
        self.in_task: list[bool] = []
        self.two = asyncio.Event()

    def _store(self, event: generation_pb2.GenerationEvent) -> None:
        self.in_task.append(asyncio.current_task() is not None)
        super()._store(event)
        if len(self.in_task) == 2:
            self.two.set()


async def test_a_timed_cut_on_the_in_memory_log_appends_from_its_timer_without_a_task() -> None:
    log = TaskNotingLog()
    await log.create(GENERATION)
    deltas = DeltaCoalescer(JobEvents(GENERATION, log, CoreMetrics(), 0), window_seconds=0.05)
    await deltas.add("INT. ROOF - NIGHT\n")  # the first chunk: at once, in the writer's task
    await deltas.add("Maya waits.\n")  # cut by the window's timer
    async with asyncio.timeout(5):
        await log.two.wait()
    assert log.in_task == [True, False]
    await deltas.close()
    texts: list[str] = []
    async for event in log.follow(GENERATION, 0):  # the log does not end: read the two
        texts.append(event.text_delta.text)
        if event.sequence == 2:
            break
    assert "".join(texts) == "INT. ROOF - NIGHT\nMaya waits.\n"


async def test_a_timed_cut_the_grid_runs_late_keeps_the_stream_on_its_grid_points() -> None:
    log = MemoryEventLog()
    await log.create(GENERATION)
    window = 0.1
    deltas = DeltaCoalescer(JobEvents(GENERATION, log, CoreMetrics(), 0), window_seconds=window)
    loop = asyncio.get_running_loop()
    followed = aiter(log.follow(GENERATION, 0))
    await deltas.add("first ")  # out at once
    await deltas.add("second ")  # waits for a cut on the grid
    due = deltas._timer_due
    # Hold the loop past the cut's point by more than a grid step (window / GRID_PHASES).
    loop.call_at(due - 0.001, time.sleep, 0.05)
    texts = [(await anext(followed)).text_delta.text for _ in range(2)]
    assert loop.time() >= due + 0.04  # the cut ran late
    await deltas.add("third ")
    # The next cut is one window after the point, not after the late turn: same cohort.
    assert abs(deltas._timer_due - (due + window)) < 1e-6
    await deltas.close()
    texts.append((await anext(followed)).text_delta.text)
    assert texts == ["first ", "second ", "third "]


async def test_a_chunk_just_before_its_cut_goes_out_at_once_and_keeps_the_cohort() -> None:
    log = MemoryEventLog()
    await log.create(GENERATION)
    window = 0.1
    deltas = DeltaCoalescer(JobEvents(GENERATION, log, CoreMetrics(), 0), window_seconds=window)
    loop = asyncio.get_running_loop()
    await deltas.add("first ")  # out at once
    await deltas.add("second ")  # waits for a cut on the grid
    due = deltas._timer_due
    await asyncio.sleep(max(0.0, due - loop.time()) + 0.01)  # the cut at `due` has run
    following = due + window
    # A chunk a moment before the next cut's point (a paced read a little late) goes at once.
    wake = asyncio.get_running_loop().create_future()
    loop.call_at(following - EARLY_SECONDS / 2, wake.set_result, None)
    await wake
    if loop.time() < following:  # the loop was not too late for the case itself
        await deltas.add("third ")
        assert deltas._timer is None  # cut at once
        await deltas.add("fourth ")
        # Its cut counts as made at its point: the next is a window on, on the same grid.
        assert abs(deltas._timer_due - (following + window)) < 1e-6
    await deltas.close()


async def test_a_flush_right_after_a_timed_cut_goes_out_after_it() -> None:
    log = GatedLog()  # appends only through `append`, as the Redis log does
    log.gate.set()
    await log.create(GENERATION)
    deltas = DeltaCoalescer(JobEvents(GENERATION, log, CoreMetrics(), 0), window_seconds=0.05)
    await deltas.add("a ")  # out at once
    await deltas.add("b ")  # waits for a timed cut
    assert deltas._timer is not None
    deltas._timer.cancel()
    deltas._cut_later()  # the grid runs the cut: its append is a task that has not started
    await deltas.add("c ")
    await deltas.flush()  # before a progress event: must follow "b "
    await deltas.close()
    texts = []
    async for event in log.follow(GENERATION, 0):
        texts.append(event.text_delta.text)
        if len(texts) == 3:
            break
    assert texts == ["a ", "b ", "c "]
