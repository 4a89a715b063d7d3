"""Leases on a real Redis: owners renew by compare-and-set, one core ends an orphan, and
readers are judged by Redis's clock.

A core's renewal extends only a lease it still holds, or takes back one that
lapsed while nobody ended the job; a lease another core took is reported lost.
Ending an orphan takes the lease first (SET NX): of two cores, and an owner back
from a stall, only one writes the job's end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from scriptgen.v1 import generation_pb2, generation_service_pb2

from server import Core, SyntheticConfig
from server.events import RedisConnection, RedisEventLog
from server.jobs import RedisCoordination
from tests.conftest import fast_core_config
from tests.gateway.conftest import eventually
from tests.server.rpc import connect, read

gs = generation_service_pb2
NAME = "generations/glease"
LEASE = 0.3


async def holder(redis: RedisConnection, name: str = NAME) -> str | None:
    raw = await redis.client.get(redis.key("owner", name))
    return None if raw is None else cast(bytes, raw).decode()


@pytest.fixture
async def log(redis_connection: RedisConnection) -> RedisEventLog:
    """The job's event log, created, with its `queued` event."""
    made = RedisEventLog(redis_connection)
    await made.create(NAME)
    queued = generation_pb2.GenerationEvent(generation=NAME, sequence=1)
    queued.queued.parent = "projects/p"
    await made.append(queued)
    return made


async def test_renewal_keeps_its_own_lease_and_reports_one_another_core_took(
    redis_connection: RedisConnection, log: RedisEventLog
) -> None:
    owner = RedisCoordination(redis_connection, lease_seconds=LEASE)
    other = RedisCoordination(redis_connection, lease_seconds=LEASE)
    await owner.claim(NAME)
    assert await owner.renew([NAME]) == set()
    assert not await other.take_over(NAME)  # held: nobody ends a live job
    await asyncio.sleep(LEASE + 0.1)  # the owner stalls past its lease
    assert await other.take_over(NAME)
    # Before: the owner's renewal was a blind SET, taking the lease back from the ender.
    assert await owner.renew([NAME]) == {NAME}
    assert await holder(redis_connection) == other.owner
    await owner.release(NAME)  # the stopped job's clean-up leaves the other's lease alone
    assert await holder(redis_connection) == other.owner
    await other.release(NAME)
    assert await holder(redis_connection) is None


async def test_a_lapsed_lease_is_taken_back_only_while_the_job_has_not_ended(
    redis_connection: RedisConnection, log: RedisEventLog
) -> None:
    owner = RedisCoordination(redis_connection, lease_seconds=LEASE)
    await owner.claim(NAME)
    await asyncio.sleep(LEASE + 0.1)  # nobody noticed the stall
    assert await owner.renew([NAME]) == set()
    assert await holder(redis_connection) == owner.owner
    await asyncio.sleep(LEASE + 0.1)
    ended = generation_pb2.GenerationEvent(generation=NAME, sequence=2)
    ended.failed.status.message = "its core is gone"
    await log.append(ended)  # another core ended it and let its lease go
    assert await owner.renew([NAME]) == {NAME}
    assert await holder(redis_connection) is None


async def test_of_cores_racing_to_end_an_orphan_one_takes_its_lease(
    redis_connection: RedisConnection, log: RedisEventLog
) -> None:
    enders = [RedisCoordination(redis_connection, lease_seconds=5.0) for _ in range(8)]
    taken = await asyncio.gather(*(ender.take_over(NAME) for ender in enders))
    assert sum(taken) == 1


@pytest.fixture
async def redis_core(tmp_path: Path, redis_url: str, redis_prefix: str) -> AsyncIterator[Core]:
    """A core on Redis (leases of 0.6 s) writing slowly, so its jobs run a while."""
    config = replace(
        fast_core_config(tmp_path / "core"),
        metrics_address=None,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        owner_lease_seconds=0.6,
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=20.0),
    )
    core = Core(config)
    await core.start()
    try:
        yield core
    finally:
        await core.stop(grace=0.0)


async def test_a_core_whose_lease_was_taken_stops_the_job_and_writes_nothing(
    redis_core: Core, redis_url: str, redis_prefix: str
) -> None:
    async with connect(f"127.0.0.1:{redis_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Taken", detach=True)
        )
        first = await read(call)
        assert first is not None
        name = first.event.generation
        call.cancel()
        await asyncio.sleep(0.3)
        jobs = redis_core.jobs.redis
        assert jobs is not None
        # Another core, believing this one gone, took the lapsed lease to end the job.
        other = RedisCoordination(jobs, lease_seconds=30.0)
        await jobs.client.set(jobs.key("owner", name), other.owner, px=30_000)
        await eventually(lambda: redis_core.runner.running == 0, "the job to stop")
        log = RedisEventLog(jobs)
        kinds = [e.WhichOneof("kind") async for e in _events(log, name)]
        assert not {"completed", "failed", "cancelled"} & set(kinds), kinds
        record = await rpc.generations.GetGeneration(gs.GetGenerationRequest(name=name))
        assert record.generation.state == generation_pb2.GENERATION_STATE_RUNNING
        # The other core ends it (here: its lease lapsed, and this core meets the job).
        await other.release(name)
        assert await redis_core.runner.end_orphan(name)
        ended = await rpc.generations.GetGeneration(gs.GetGenerationRequest(name=name))
    kinds = [e.WhichOneof("kind") async for e in _events(log, name)]
    assert [k for k in kinds if k in {"completed", "failed", "cancelled"}] == ["failed"]
    assert ended.generation.state == generation_pb2.GENERATION_STATE_FAILED
    assert ended.generation.error.message.startswith("the core running")


async def _events(log: RedisEventLog, name: str) -> AsyncIterator[generation_pb2.GenerationEvent]:
    """The events in the log now (a follower that stops at the last one)."""
    last = await log.last_sequence(name)
    if last == 0:
        return
    async for event in log.follow(name, 0):
        yield event
        if event.sequence == last:
            return


@pytest.mark.parametrize("skew", [-30.0, 30.0])
async def test_readers_count_whatever_the_reader_cores_clock_says(
    redis_connection: RedisConnection, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    owner = RedisCoordination(redis_connection, reader_seconds=1.0)
    reader = RedisCoordination(redis_connection, reader_seconds=1.0)
    real = time.time
    # The reader core's clock is `skew` seconds off while it enters and renews.
    # Before: scores were its own `time.time()`, judged by the owner's clock.
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    token = await reader.reader_enter(NAME)
    await reader.readers_renew([(NAME, token), ("generations/gother", "t2")])
    monkeypatch.setattr(time, "time", real)
    assert await owner.readers([NAME, "generations/gother", "generations/gnone"]) == {
        NAME: 1,
        "generations/gother": 1,
        "generations/gnone": 0,
    }
    await asyncio.sleep(1.2)  # not renewed: gone after its lease
    assert await owner.readers([NAME]) == {NAME: 0}
    await reader.readers_renew([(NAME, token)])
    await reader.reader_leave(NAME, token)
    assert await owner.readers([NAME]) == {NAME: 0}
