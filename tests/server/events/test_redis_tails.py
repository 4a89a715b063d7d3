"""Followers of a job on the core that writes its Redis log read the events from memory.

On a Redis of its own, so its command counts are this test's. Another core is a
second `RedisEventLog` on the same Redis: it has no tail of the first one's jobs.
"""

from __future__ import annotations

import asyncio

import pytest
from redis import Redis as SyncRedis
from scriptgen.v1 import generation_pb2

from server.errors import Unavailable
from server.events import EventLogConflict, RedisConnection, RedisEventLog, open_redis
from server.events.redis_connection import BLOCK_MILLISECONDS
from tests.backends.redis import RedisServer

GenerationEvent = generation_pb2.GenerationEvent
NAME = "generations/gtails"
FOLLOWERS = 20


def xread_calls(url: str) -> int:
    with SyncRedis.from_url(url) as probe:
        stats = probe.info("commandstats").get("cmdstat_xread", {})
        return int(stats.get("calls", 0))


def event(sequence: int, kind: str = "progress") -> GenerationEvent:
    made = GenerationEvent(generation=NAME, sequence=sequence)
    if kind == "queued":
        made.queued.parent = "projects/p"
    elif kind == "completed":
        made.completed.episode.name = "projects/p/episodes/1"
    elif kind == "failed":
        made.failed.status.message = "its core is gone"
    else:
        made.progress.message = f"step {sequence}"
    return made


async def follow(log: RedisEventLog) -> list[int]:
    return [each.sequence async for each in log.follow(NAME, 0)]


async def queued_and_followed(log: RedisEventLog) -> asyncio.Task[list[int]]:
    """A new job's log with its `queued` event, and a local follower waiting for more."""
    await log.create(NAME)
    await log.append(event(1, "queued"))
    follower = asyncio.create_task(follow(log))
    await asyncio.sleep(0.05)
    return follower


async def test_followers_on_the_writing_core_read_no_event_back_from_redis(
    own_redis: RedisServer, own_redis_connection: RedisConnection
) -> None:
    log = RedisEventLog(own_redis_connection)
    await log.create(NAME)
    await log.append(event(1, "queued"))
    before = xread_calls(own_redis.url)
    followers = [asyncio.create_task(follow(log)) for _ in range(FOLLOWERS)]
    await asyncio.sleep(0.05)
    for sequence in range(2, 52):
        await log.append(event(sequence))
    await log.append(event(52, "completed"))
    async with asyncio.timeout(10):
        results = await asyncio.gather(*followers)
    assert results == [list(range(1, 53))] * FOLLOWERS
    assert xread_calls(own_redis.url) == before
    assert log.local_logs == 0, "the ended job's events are still held"
    # Redis has every event: another core replays the same log.
    assert await follow(RedisEventLog(own_redis_connection)) == list(range(1, 53))


async def test_a_job_ended_by_another_core_ends_its_local_followers(
    own_redis_connection: RedisConnection,
) -> None:
    log, other_core = RedisEventLog(own_redis_connection), RedisEventLog(own_redis_connection)
    follower = await queued_and_followed(log)
    # The other core took this one for gone and ended its job (it did not append since).
    await other_core.append(event(2, "failed"))
    async with asyncio.timeout(BLOCK_MILLISECONDS / 1000 * 2 + 2):
        assert await follower == [1, 2]
    with pytest.raises(EventLogConflict):
        await log.append(event(2))
    assert log.local_logs == 0


async def test_a_refused_append_sends_local_followers_to_redis_at_once(
    own_redis_connection: RedisConnection,
) -> None:
    log, other_core = RedisEventLog(own_redis_connection), RedisEventLog(own_redis_connection)
    follower = await queued_and_followed(log)
    elsewhere = event(2)
    elsewhere.progress.message = "written by the other core"
    await other_core.append(elsewhere)
    with pytest.raises(EventLogConflict):
        await log.append(event(2))  # this core learns the log went on without it
    await other_core.append(event(3, "completed"))
    # Well within one blocking read: the follower did not wait for the idle check.
    async with asyncio.timeout(BLOCK_MILLISECONDS / 1000 / 2):
        assert await follower == [1, 2, 3]


async def test_an_append_redis_did_not_take_leaves_no_event_in_memory(
    own_redis: RedisServer,
) -> None:
    connection = open_redis(own_redis.url, "tails:", retry_seconds=0.2)
    log = RedisEventLog(connection)
    try:
        follower = await queued_and_followed(log)
        own_redis.stop()
        with pytest.raises(Unavailable):
            await log.append(event(2))
        assert log.local_logs == 0
        # The follower goes on from Redis, which is down: it is told so, not left waiting.
        async with asyncio.timeout(10):
            with pytest.raises(Unavailable):
                await follower
    finally:
        await connection.aclose()


async def test_a_job_that_stopped_without_its_end_leaves_no_tail(
    own_redis_connection: RedisConnection,
) -> None:
    log = RedisEventLog(own_redis_connection)
    await log.create(NAME)
    await log.append(event(1, "queued"))
    assert log.local_logs == 1
    log.writer_done(NAME)  # e.g. its end could not be written: another core will end it
    assert log.local_logs == 0
    await RedisEventLog(own_redis_connection).append(event(2, "failed"))
    async with asyncio.timeout(5):
        assert await follow(log) == [1, 2]
