"""A core on Redis serves more concurrent event streams than redis-py's default pool holds.

Every follower of another core's job waits in a blocking XREAD on a pooled connection of
its own. redis-py 8 caps a pool at 100 connections by default and refuses the
next with "Too many connections", which the core turned into REDIS_UNAVAILABLE:
the 101st concurrent stream of a core failed. On a Redis of its own, so the count
of connections is this test's.
"""

from __future__ import annotations

import asyncio

from redis import Redis as SyncRedis
from scriptgen.v1 import generation_pb2

from server.events import RedisEventLog, open_redis
from tests.backends.redis import RedisServer

#: Well past redis-py 8's default pool of 100.
FOLLOWERS = 160


def blocked_reads(url: str) -> int:
    """Connections of the Redis server waiting in a blocking XREAD."""
    with SyncRedis.from_url(url) as probe:
        return sum(1 for client in probe.client_list() if client.get("cmd") == "xread")


async def test_more_concurrent_followers_than_the_default_pool_all_get_their_events(
    own_redis: RedisServer,
) -> None:
    # A short retry, so a refused connection fails the follower quickly instead of retrying.
    connection = open_redis(own_redis.url, "pool:", retry_seconds=0.5)
    log = RedisEventLog(connection)
    # The jobs are another core's: this one's followers read them from Redis.
    other_core = RedisEventLog(connection)
    names = [f"generations/gpool{number}" for number in range(FOLLOWERS)]
    try:
        for name in names:
            await log.create(name)
            queued = generation_pb2.GenerationEvent(generation=name, sequence=1)
            queued.queued.parent = "projects/p"
            await log.append(queued)

        async def follow(name: str) -> list[int]:
            return [event.sequence async for event in other_core.follow(name, 0)]

        followers = [asyncio.create_task(follow(name)) for name in names]
        # Every follower read `queued` and now waits in XREAD on a connection of its own.
        async with asyncio.timeout(15):
            while blocked_reads(own_redis.url) < FOLLOWERS:
                failed = [task for task in followers if task.done()]
                assert not failed, f"a follower ended early: {failed[0].exception()!r}"
                await asyncio.sleep(0.05)
        for name in names:
            completed = generation_pb2.GenerationEvent(generation=name, sequence=2)
            completed.completed.episode.name = "projects/p/episodes/1"
            await log.append(completed)
        async with asyncio.timeout(15):
            results = await asyncio.gather(*followers)
        assert results == [[1, 2]] * FOLLOWERS
    finally:
        await connection.aclose()
