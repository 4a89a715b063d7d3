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

import grpc
import pytest
from scriptgen.v1 import generation_pb2, generation_service_pb2

from server import Core, SyntheticConfig
from server.events import EventLogConflict, LeaseTaken, RedisConnection, RedisEventLog
from server.jobs import RedisCoordination
from tests.conftest import fast_core_config
from tests.gateway.conftest import eventually
from tests.server.rpc import connect, read

gs = generation_service_pb2
NAME = "generations/glease"
LEASE = 0.3
DATA_LOSS = grpc.StatusCode.DATA_LOSS.value[0]


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
    assert await owner.renew([NAME]) == {}
    assert not await other.take_over(NAME)  # held: nobody ends a live job
    await asyncio.sleep(LEASE + 0.1)  # the owner stalls past its lease
    assert await other.take_over(NAME)
    # Before: the owner's renewal was a blind SET, taking the lease back from the ender.
    assert await owner.renew([NAME]) == {NAME: "taken"}
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
    assert await owner.renew([NAME]) == {}
    assert await holder(redis_connection) == owner.owner
    await asyncio.sleep(LEASE + 0.1)
    ended = generation_pb2.GenerationEvent(generation=NAME, sequence=2)
    ended.failed.status.message = "its core is gone"
    await log.append(ended)  # another core ended it and let its lease go
    assert await owner.renew([NAME]) == {NAME: "ended"}
    assert await holder(redis_connection) is None


async def test_of_cores_racing_to_end_an_orphan_one_takes_its_lease(
    redis_connection: RedisConnection, log: RedisEventLog
) -> None:
    enders = [RedisCoordination(redis_connection, lease_seconds=5.0) for _ in range(8)]
    taken = await asyncio.gather(*(ender.take_over(NAME) for ender in enders))
    assert sum(taken) == 1


@pytest.fixture
async def redis_core(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[Core]:
    """A core on Redis (leases of 0.6 s unless a test asks otherwise) writing slowly, so its
    jobs run a while."""
    config = replace(
        fast_core_config(tmp_path / "core"),
        metrics_address=None,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        owner_lease_seconds=getattr(request, "param", 0.6),
        synthetic=SyntheticConfig(first_token_seconds=0.05, tokens_per_second=20.0),
    )
    core = Core(config)
    await core.start()
    try:
        yield core
    finally:
        await core.stop(grace=0.0)


async def _start_detached(core: Core, title: str) -> str:
    """A detached job on `core`, once its first event is out; its name."""
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title=title, detach=True)
        )
        first = await read(call)
        assert first is not None
        call.cancel()
    return first.event.generation


async def _written(log: RedisEventLog, name: str, sequence: int) -> None:
    """Return once the job's log holds `sequence` events."""
    async with asyncio.timeout(10):
        async for event in log.follow(name, 0):
            if event.sequence == sequence:
                return


async def until_ended(core: Core, name: str, seconds: float) -> generation_pb2.Generation:
    """The job's registry record once it ended; fails after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            record = await core.jobs.registry.get(name)
            if record.state in ENDED:
                return record
            await asyncio.sleep(0.05)


ENDED = {
    generation_pb2.GENERATION_STATE_SUCCEEDED,
    generation_pb2.GENERATION_STATE_FAILED,
    generation_pb2.GENERATION_STATE_CANCELLED,
}
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.mark.parametrize("redis_core", [3.0], indirect=True)
async def test_a_core_whose_lease_was_taken_stops_at_once_and_ends_the_job_if_the_taker_dies(
    redis_core: Core,
) -> None:
    name = await _start_detached(redis_core, "Taken")
    jobs = redis_core.jobs.redis
    assert jobs is not None
    log = RedisEventLog(jobs)
    await _written(log, name, 6)  # writing its script
    # Another core, believing this one gone, took the lease to end the job — and died
    # before writing anything (its lease lapses after 2 s).
    other = RedisCoordination(jobs, lease_seconds=2.0)
    await jobs.client.set(jobs.key("owner", name), other.owner, px=2000)
    taken_at = await log.last_sequence(name)
    # This core learns of it at its next renewal, up to a second later (a third of 3 s).
    await eventually(lambda: redis_core.runner.running == 0, "the job to stop")
    # Not one append after the lease was taken (before: deltas until the next renewal).
    assert await log.last_sequence(name) == taken_at
    record = await redis_core.jobs.registry.get(name)
    assert record.state == generation_pb2.GENERATION_STATE_RUNNING
    # Before: nobody ended it (RUNNING until the log expired). Now its own core does,
    # once the taker's lease lapsed.
    ended = await until_ended(redis_core, name, 10.0)
    kinds = [e.WhichOneof("kind") async for e in _events(log, name)]
    assert len(kinds) == taken_at + 1
    assert [k for k in kinds if k in TERMINAL] == ["failed"] == kinds[-1:]
    assert ended.state == generation_pb2.GENERATION_STATE_FAILED
    assert ended.error.message.startswith("the core running")


async def test_a_fenced_log_refuses_a_writer_whose_lease_another_core_holds(
    redis_connection: RedisConnection, log: RedisEventLog
) -> None:
    log.fence("core-a")
    owner_key = redis_connection.key("owner", NAME)

    def delta(sequence: int) -> generation_pb2.GenerationEvent:
        made = generation_pb2.GenerationEvent(generation=NAME, sequence=sequence)
        made.text_delta.text = "x"
        return made

    await log.append(delta(2))  # nobody holds it (lapsed): the renewal takes it back
    await redis_connection.client.set(owner_key, "core-a")
    await log.append(delta(3))
    await redis_connection.client.set(owner_key, "core-b")
    with pytest.raises(LeaseTaken):
        await log.append(delta(4))
    assert await log.last_sequence(NAME) == 3
    # Core b, holding the lease, ends the job through its own fenced log.
    ender = RedisEventLog(redis_connection)
    ender.fence("core-b")
    end = generation_pb2.GenerationEvent(generation=NAME, sequence=4)
    end.failed.status.message = "its core is gone"
    await ender.append(end)
    assert await log.ended(NAME)


async def test_renewal_says_a_log_vanished(
    redis_connection: RedisConnection, log: RedisEventLog
) -> None:
    owner = RedisCoordination(redis_connection, lease_seconds=LEASE)
    await owner.claim(NAME)
    await asyncio.sleep(LEASE + 0.1)
    await redis_connection.client.delete(redis_connection.key("events", NAME))
    assert await owner.renew([NAME]) == {NAME: "vanished"}


@pytest.fixture
async def orphan(redis_core: Core) -> str:
    """A job in the registry and the log whose core is gone (no lease, no end)."""
    name = "generations/gorphan"
    generation = generation_pb2.Generation(
        name=name, parent="projects/p", state=generation_pb2.GENERATION_STATE_RUNNING
    )
    await redis_core.jobs.registry.create(generation, "fingerprint")
    await redis_core.jobs.event_log.create(name)
    queued = generation_pb2.GenerationEvent(generation=name, sequence=1)
    queued.queued.parent = "projects/p"
    await redis_core.jobs.event_log.append(queued)
    return name


@pytest.mark.parametrize("redis_core", [6.0], indirect=True)
async def test_ending_an_orphan_tries_again_while_the_old_owner_still_appends(
    redis_core: Core, orphan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = redis_core.jobs.event_log
    append = log.append
    conflicts = 0

    async def old_owner_first(event: generation_pb2.GenerationEvent) -> None:
        nonlocal conflicts
        if conflicts < 6:  # the old owner's appends land first, six times
            conflicts += 1
            raise EventLogConflict(f"{event.generation}: SEQUENCE {event.sequence}")
        await append(event)

    monkeypatch.setattr(log, "append", old_owner_first)
    # Before: five tries in a row, then it gave up and nobody ended the job.
    assert await redis_core.runner.end_orphan(orphan)
    record = await redis_core.jobs.registry.get(orphan)
    assert record.state == generation_pb2.GENERATION_STATE_FAILED
    assert await log.ended(orphan)


async def test_an_end_refused_because_another_core_ended_the_job_leaves_its_end_in_the_registry(
    redis_core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await _start_detached(redis_core, "Raced")
    jobs = redis_core.jobs.redis
    assert jobs is not None
    registry = redis_core.jobs.registry
    update = registry.update
    raced = False

    async def other_core_first(generation: generation_pb2.Generation) -> None:
        nonlocal raced
        if generation.state == generation_pb2.GENERATION_STATE_CANCELLED and not raced:
            raced = True
            # Another core, believing this one gone, ends the job first: log, then registry.
            other = RedisEventLog(jobs)
            end = generation_pb2.GenerationEvent(generation=name)
            end.failed.status.message = "the core running it stopped without ending it"
            while True:  # after an append of this core's still in flight
                end.sequence = await other.last_sequence(name) + 1
                try:
                    await other.append(end)
                    break
                except EventLogConflict:
                    await asyncio.sleep(0.01)
            record = await registry.get(name)
            record.state = generation_pb2.GENERATION_STATE_FAILED
            record.error.CopyFrom(end.failed.status)
            await update(record)
        await update(generation)

    monkeypatch.setattr(registry, "update", other_core_first)
    await redis_core.runner.cancel(name)
    assert raced
    # Before: CANCELLED, written over the other core's end, while the log says `failed`.
    record = await registry.get(name)
    assert record.state == generation_pb2.GENERATION_STATE_FAILED
    assert record.error.message == "the core running it stopped without ending it"


# The events kept after a failover to a replica that missed the last writes.
_ROLL_BACK = """
local kept = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[1]))
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
for _, entry in ipairs(kept) do
  redis.call('XADD', KEYS[1], entry[1], unpack(entry[2]))
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #kept
"""


async def test_a_job_whose_log_a_failover_rolled_back_is_ended_by_its_owner(
    redis_core: Core,
) -> None:
    name = await _start_detached(redis_core, "Rolled back")
    jobs = redis_core.jobs.redis
    assert jobs is not None
    log = RedisEventLog(jobs)
    await _written(log, name, 4)
    assert await jobs.client.eval(_ROLL_BACK, 1, jobs.key("events", name), 2) == 2
    # Before: the owner's next append was refused, it stopped as if ended elsewhere, and
    # the job showed RUNNING until its log expired.
    record = await until_ended(redis_core, name, 5.0)
    assert record.state == generation_pb2.GENERATION_STATE_FAILED
    assert record.error.code == DATA_LOSS
    assert "Redis failover" in record.error.message
    kinds = [e.WhichOneof("kind") async for e in _events(log, name)]
    assert kinds[:2] == ["queued", kinds[1]] and kinds[2:] == ["failed"], kinds


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
