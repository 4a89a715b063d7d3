"""Appends of many jobs at once share round trips to Redis, and each keeps its own outcome.

On a Redis of its own, so its client list is this test's connections.
"""

from __future__ import annotations

import asyncio

from scriptgen.v1 import generation_pb2

from server.errors import DataLoss
from server.events import EventLogConflict, RedisConnection, RedisEventLog
from tests.backends.redis import RedisServer, client_count

GenerationEvent = generation_pb2.GenerationEvent
JOBS = 100


def progress(name: str, sequence: int) -> GenerationEvent:
    made = GenerationEvent(generation=name, sequence=sequence)
    made.progress.message = f"step {sequence}"
    return made


async def test_appends_of_many_jobs_at_once_go_out_together(
    own_redis: RedisServer, own_redis_connection: RedisConnection
) -> None:
    log = RedisEventLog(own_redis_connection)
    names = [f"generations/gappends{number}" for number in range(JOBS)]
    for name in names:
        await log.create(name)
    for sequence in (1, 2, 3):
        await asyncio.gather(*(log.append(progress(name, sequence)) for name in names))
    # A command each, every append would have taken a pooled own_redis_connection of its own.
    assert client_count(own_redis.url) <= 3
    reader = RedisEventLog(own_redis_connection)  # another core's view: what Redis holds
    for name in names:
        assert await reader.last_sequence(name) == 3


async def test_each_append_of_a_batch_has_its_own_outcome(
    own_redis_connection: RedisConnection,
) -> None:
    log = RedisEventLog(own_redis_connection)
    for name in ("generations/gfine", "generations/ggap"):
        await log.create(name)
    outcomes = await asyncio.gather(
        log.append(progress("generations/gfine", 1)),
        log.append(progress("generations/ggap", 2)),  # sequence 1 is missing
        log.append(progress("generations/gnever", 1)),  # no such log
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], EventLogConflict)
    assert isinstance(outcomes[2], DataLoss)
    assert await log.last_sequence("generations/gfine") == 1
    assert await log.last_sequence("generations/ggap") == 0


async def test_a_cancelled_append_leaves_the_others_of_its_batch_alone(
    own_redis_connection: RedisConnection,
) -> None:
    log = RedisEventLog(own_redis_connection)
    names = [f"generations/gcancel{number}" for number in range(10)]
    for name in names:
        await log.create(name)
    appends = [asyncio.create_task(log.append(progress(name, 1))) for name in names]
    await asyncio.sleep(0)  # every append is queued or in flight
    appends[0].cancel()
    async with asyncio.timeout(5):
        await asyncio.gather(*appends[1:])
    for name in names[1:]:
        assert await log.last_sequence(name) == 1
    # Whether the cancelled one was taken is unknown; the log is whole either way.
    assert await log.last_sequence(names[0]) in (0, 1)


async def test_appends_go_through_after_redis_forgot_the_script(
    own_redis_connection: RedisConnection,
) -> None:
    log = RedisEventLog(own_redis_connection)
    names = [f"generations/gflushed{number}" for number in range(10)]
    for name in names:
        await log.create(name)
    await asyncio.gather(*(log.append(progress(name, 1)) for name in names))
    # What a Redis restarted with its data looks like to a resent pipeline.
    await own_redis_connection.client.script_flush()
    await asyncio.gather(*(log.append(progress(name, 2)) for name in names))
    for name in names:
        assert await log.last_sequence(name) == 2


async def test_a_job_cancelled_mid_append_resyncs_and_ends_cleanly(
    own_redis_connection: RedisConnection,
) -> None:
    log = RedisEventLog(own_redis_connection)
    names = [f"generations/gbusy{number}" for number in range(20)]
    cancelled = "generations/gcancelled"
    for name in (*names, cancelled):
        await log.create(name)
    for _ in range(5):
        sequence = await log.last_sequence(cancelled) + 1
        # Other jobs' appends in flight, and this job's queued behind them, then cancelled.
        busy = [asyncio.create_task(log.append(progress(n, sequence))) for n in names]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        mine = asyncio.create_task(log.append(progress(cancelled, sequence)))
        await asyncio.sleep(0)
        mine.cancel()
        # What the job's emitter does next: ask where the log stands, append after it.
        last = await log.last_sequence(cancelled)
        after = progress(cancelled, last + 1)
        after.progress.message = "after the cancel"  # not the cancelled append again
        await log.append(after)
        await asyncio.gather(*busy)
    ended = GenerationEvent(generation=cancelled, sequence=await log.last_sequence(cancelled) + 1)
    ended.cancelled.reason = "test"
    await log.append(ended)
    assert await log.ended(cancelled)
