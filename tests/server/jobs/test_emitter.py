"""A job's emitter: sequences stay right when an append is cancelled in flight."""

from __future__ import annotations

import asyncio

import pytest
from scriptgen.v1 import generation_pb2

from server.events.memory import MemoryEventLog
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics

NAME = "generations/gemitter"
GenerationEvent = generation_pb2.GenerationEvent


class LandsThenCancelled(MemoryEventLog):
    """A log whose next append is stored, then its caller is cancelled: what a Redis append
    looks like when the cancellation arrives while the command's reply is on its way."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_next = False

    def append_now(self, event: GenerationEvent) -> bool:
        return False  # every append goes through `append` below, which may wait

    async def append(self, event: GenerationEvent) -> None:
        await super().append(event)
        if self.cut_next:
            self.cut_next = False
            raise asyncio.CancelledError


async def _queued(log: MemoryEventLog) -> JobEvents:
    """A job's emitter whose log holds its `queued` event."""
    await log.create(NAME)
    events = JobEvents(NAME, log, CoreMetrics(), heartbeat_seconds=0)
    await events.emit("queued", GenerationEvent.Queued(parent="projects/p1"))
    return events


async def test_the_event_after_a_cancelled_append_follows_what_landed() -> None:
    log = LandsThenCancelled()
    events = await _queued(log)
    log.cut_next = True
    with pytest.raises(asyncio.CancelledError):
        await events.emit("text_delta", GenerationEvent.TextDelta(text="INT. ROOM - DAY\n"))
    # The job's cancellation path appends its terminal event: it must not collide with
    # the delta that did land (which would leave the job with no terminal event at all).
    await events.emit("cancelled", GenerationEvent.Cancelled(reason="cancelled by request"))
    stored = [event async for event in log.follow(NAME, 0)]
    assert [e.sequence for e in stored] == [1, 2, 3]
    assert [e.WhichOneof("kind") for e in stored] == ["queued", "text_delta", "cancelled"]
    assert events.ended


async def test_the_event_after_a_cancelled_append_that_did_not_land_takes_its_place() -> None:
    log = MemoryEventLog()
    events = await _queued(log)
    appending = asyncio.get_running_loop().create_future()
    original = log.append

    async def never_lands(event: GenerationEvent) -> None:
        appending.set_result(None)
        await asyncio.Event().wait()  # cancelled before the log took it
        await original(event)

    log.append = never_lands  # type: ignore[method-assign]
    task = asyncio.create_task(events.emit("text_delta", GenerationEvent.TextDelta(text="x")))
    await appending
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    log.append = original  # type: ignore[method-assign]
    await events.emit("cancelled", GenerationEvent.Cancelled(reason="cancelled by request"))
    stored = [event async for event in log.follow(NAME, 0)]
    assert [(e.sequence, e.WhichOneof("kind")) for e in stored] == [(1, "queued"), (2, "cancelled")]


async def test_emit_now_appends_at_once_only_when_no_other_emit_is_in_flight() -> None:
    log = MemoryEventLog()
    events = await _queued(log)
    progress = GenerationEvent.Progress
    assert events.emit_now("progress", progress(message="at once"))
    assert await log.last_sequence(NAME) == 2
    # An emit waiting for the lock was asked first: an append at once would overtake it.
    async with events._lock:
        waiting = asyncio.create_task(events.emit("progress", progress(message="first")))
        await asyncio.sleep(0)
        assert not events.can_emit_now
        assert not events.emit_now("progress", progress(message="second"))
    await waiting
    assert events.emit_now("progress", progress(message="second"))
    messages: list[str] = []
    async for event in log.follow(NAME, 1):  # the log does not end: read the three
        messages.append(event.progress.message)
        if event.sequence == 4:
            break
    assert messages == ["at once", "first", "second"]


async def test_a_log_that_cannot_append_at_once_gets_awaited_appends() -> None:
    log = LandsThenCancelled()  # appends only through `append`
    events = await _queued(log)
    assert not events.emit_now("progress", GenerationEvent.Progress(message="later"))
    assert await log.last_sequence(NAME) == 1  # nothing was appended, nothing was numbered
    await events.emit("progress", GenerationEvent.Progress(message="later"))
    assert await log.last_sequence(NAME) == 2
