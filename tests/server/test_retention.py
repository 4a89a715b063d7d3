"""Finished jobs kept in memory: by age and by count, oldest end first (server.retention)."""

from __future__ import annotations

import pytest
from scriptgen.v1 import generation_pb2

from server.errors import NotFound
from server.events import MemoryEventLog
from server.jobs import MemoryJobRegistry
from server.retention import FinishedJobs, Retention


def test_the_oldest_ended_go_first_beyond_the_count() -> None:
    finished = FinishedJobs(Retention(seconds=100.0, count=2), clock=lambda: 0.0)
    assert finished.ended("a") == []
    assert finished.ended("b") == []
    assert finished.ended("c") == ["a"]
    assert len(finished) == 2


def test_jobs_past_their_age_go_whatever_the_count() -> None:
    now = [0.0]
    finished = FinishedJobs(Retention(seconds=10.0, count=100), clock=lambda: now[0])
    finished.ended("a")
    now[0] = 5.0
    finished.ended("b")
    now[0] = 10.5
    assert finished.expired() == ["a"]
    now[0] = 16.0
    assert finished.expired() == ["b"]


def _event(name: str, sequence: int, kind: str) -> generation_pb2.GenerationEvent:
    event = generation_pb2.GenerationEvent(generation=name, sequence=sequence)
    getattr(event, kind).SetInParent()
    return event


async def test_the_event_log_keeps_the_newest_finished_jobs_and_every_running_one() -> None:
    log = MemoryEventLog(retention=Retention(count=3))
    await log.create("generations/running")
    for number in range(10):
        name = f"generations/g{number}"
        await log.create(name)
        await log.append(_event(name, 1, "queued"))
        await log.append(_event(name, 2, "completed"))
    assert log.finished_kept == 3
    with pytest.raises(NotFound):
        await log.last_sequence("generations/g6")
    # The newest still resume after their end; the running job is never dropped.
    assert [e.sequence async for e in log.follow("generations/g9", 0)] == [1, 2]
    assert await log.last_sequence("generations/g7") == 2
    assert await log.last_sequence("generations/running") == 0


async def test_the_registry_drops_finished_records_and_their_request_ids() -> None:
    registry = MemoryJobRegistry(retention=Retention(count=2))
    for number in range(5):
        job = generation_pb2.Generation(
            name=f"generations/g{number}", parent="projects/p", request_id=f"r{number}"
        )
        await registry.create(job, "fingerprint")
        job.state = generation_pb2.GENERATION_STATE_SUCCEEDED
        await registry.update(job)
    assert registry.finished_kept == 2
    with pytest.raises(NotFound):
        await registry.get("generations/g0")
    assert (await registry.get("generations/g4")).state == generation_pb2.GENERATION_STATE_SUCCEEDED
    # A dropped job's request_id is free again: the same request starts a new job.
    again = generation_pb2.Generation(name="generations/new", parent="projects/p", request_id="r0")
    assert (await registry.create(again, "fingerprint")).name == "generations/new"
