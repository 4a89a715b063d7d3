"""One contract for every event log: the in-memory default and Redis Streams.

Redis twice: read by the core that writes the log (its followers read the
events it appended, from memory) and by another core (its followers read Redis).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest
from google.protobuf.message import Message
from redis.typing import EncodableT, FieldT
from scriptgen.v1 import generation_pb2

from server.errors import DataLoss, NotFound
from server.events import (
    EventLog,
    EventLogConflict,
    MemoryEventLog,
    RedisConnection,
    RedisEventLog,
    open_redis,
)
from server.events.redis_connection import BLOCK_MILLISECONDS

GenerationEvent = generation_pb2.GenerationEvent
NAME = "generations/gcontract"


class TwoCores:
    """One Redis event log as two cores see it: one writes, the other reads."""

    def __init__(self, writer: RedisEventLog, reader: RedisEventLog) -> None:
        self._writer = writer
        self._reader = reader

    async def create(self, generation: str) -> None:
        await self._writer.create(generation)

    async def append(self, event: GenerationEvent) -> None:
        await self._writer.append(event)

    def writer_done(self, generation: str) -> None:
        self._writer.writer_done(generation)

    async def last_sequence(self, generation: str) -> int:
        return await self._reader.last_sequence(generation)

    async def ended(self, generation: str) -> bool:
        return await self._reader.ended(generation)

    async def end(self, generation: str) -> GenerationEvent | None:
        return await self._reader.end(generation)

    def follow(self, generation: str, after_sequence: int) -> AsyncIterator[GenerationEvent]:
        return self._reader.follow(generation, after_sequence)

    def follow_encoded(self, generation: str, after_sequence: int) -> AsyncGenerator[bytes, None]:
        return self._reader.follow_encoded(generation, after_sequence)


@pytest.fixture(params=["memory", "redis", "redis-two-cores"])
async def event_log(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    if request.param == "memory":
        yield MemoryEventLog()
        return
    connection = open_redis(
        request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    )
    try:
        if request.param == "redis":
            yield RedisEventLog(connection)
        else:
            yield TwoCores(RedisEventLog(connection), RedisEventLog(connection))
    finally:
        await connection.aclose()


def event(sequence: int, kind: str = "progress", name: str = NAME) -> GenerationEvent:
    payload: Message = {
        "progress": GenerationEvent.Progress(message=f"step {sequence}"),
        "completed": GenerationEvent.Completed(),
        "cancelled": GenerationEvent.Cancelled(reason="test"),
        "queued": GenerationEvent.Queued(parent="projects/p"),
    }[kind]
    made = GenerationEvent(generation=name, sequence=sequence)
    getattr(made, kind).CopyFrom(payload)
    return made


async def write(log: EventLog, count: int, *, end: bool = True) -> list[GenerationEvent]:
    await log.create(NAME)
    events = [event(1, "queued")] + [event(k) for k in range(2, count)]
    events.append(event(count, "completed" if end else "progress"))
    for each in events:
        await log.append(each)
    return events


async def collect(log: EventLog, after: int) -> list[GenerationEvent]:
    async with asyncio.timeout(10):
        return [e async for e in log.follow(NAME, after)]


async def test_an_unknown_job_is_not_found(event_log: EventLog) -> None:
    with pytest.raises(NotFound) as raised:
        await event_log.last_sequence("generations/gnope")
    assert raised.value.reason == "GENERATION_NOT_FOUND"
    with pytest.raises(NotFound):
        await event_log.ended("generations/gnope")
    with pytest.raises(NotFound):
        await event_log.end("generations/gnope")


async def test_a_new_log_is_empty_and_not_ended(event_log: EventLog) -> None:
    await event_log.create(NAME)
    assert await event_log.last_sequence(NAME) == 0
    assert not await event_log.ended(NAME)
    assert await event_log.end(NAME) is None


async def test_the_end_is_the_terminal_event(event_log: EventLog) -> None:
    events = await write(event_log, 3)
    end = await event_log.end(NAME)
    assert end is not None and end.SerializeToString() == events[-1].SerializeToString()


async def test_replay_from_every_sequence_gives_exactly_the_rest(event_log: EventLog) -> None:
    events = await write(event_log, 12)
    assert await event_log.last_sequence(NAME) == 12
    assert await event_log.ended(NAME)
    for after in range(13):
        rest = await collect(event_log, after)
        assert [e.SerializeToString() for e in rest] == [
            e.SerializeToString() for e in events[after:]
        ]


async def test_followers_get_live_events_up_to_the_terminal_one(event_log: EventLog) -> None:
    await event_log.create(NAME)
    await event_log.append(event(1, "queued"))
    followers = [asyncio.create_task(collect(event_log, after)) for after in (0, 1)]
    await asyncio.sleep(0.05)
    for sequence in range(2, 30):
        await event_log.append(event(sequence))
        if sequence % 7 == 0:
            await asyncio.sleep(0.01)
    await event_log.append(event(30, "cancelled"))
    first, second = await asyncio.gather(*followers)
    assert [e.sequence for e in first] == list(range(1, 31))
    assert [e.sequence for e in second] == list(range(2, 31))
    assert first[-1].HasField("cancelled")


async def test_a_follower_that_leaves_while_waiting_leaves_the_others_their_events(
    event_log: EventLog,
) -> None:
    await event_log.create(NAME)
    await event_log.append(event(1, "queued"))
    staying = asyncio.create_task(collect(event_log, 1))
    leaving = asyncio.create_task(collect(event_log, 1))
    await asyncio.sleep(0.05)  # both caught up and wait for the next event
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    if isinstance(event_log, MemoryEventLog):
        # The one who left holds no place in the log: only the one who stays waits.
        assert len(event_log._logs[NAME].waiting) == 1
    await event_log.append(event(2))
    await event_log.append(event(3, "completed"))
    assert [e.sequence for e in await staying] == [2, 3]


async def test_encoded_followers_get_each_event_serialized_as_appended(
    event_log: EventLog,
) -> None:
    events = await write(event_log, 6)
    async with asyncio.timeout(10):
        stored = [wire async for wire in event_log.follow_encoded(NAME, 2)]
    assert stored == [e.SerializeToString() for e in events[2:]]
    # Live: a follower waiting on an unended log gets each append, then stops at the end.
    await event_log.create("generations/glive")
    first = event(1, "queued", "generations/glive")
    await event_log.append(first)
    follower = asyncio.create_task(_encoded(event_log, "generations/glive"))
    await asyncio.sleep(0.05)
    last = event(2, "completed", "generations/glive")
    await event_log.append(last)
    async with asyncio.timeout(10):
        assert await follower == [first.SerializeToString(), last.SerializeToString()]


async def _encoded(log: EventLog, name: str) -> list[bytes]:
    return [wire async for wire in log.follow_encoded(name, 0)]


async def test_gaps_repeats_and_events_after_the_end_are_refused(event_log: EventLog) -> None:
    await write(event_log, 3, end=False)
    with pytest.raises(EventLogConflict):
        await event_log.append(event(5))
    with pytest.raises(EventLogConflict):
        await event_log.append(event(3, "queued"))
    await event_log.append(event(4, "completed"))
    with pytest.raises(EventLogConflict):
        await event_log.append(event(5))
    with pytest.raises(EventLogConflict):
        await event_log.append(event(5, "cancelled"))
    assert await event_log.last_sequence(NAME) == 4


async def test_appending_to_an_unknown_log_fails(event_log: EventLog) -> None:
    with pytest.raises((NotFound, DataLoss)):
        await event_log.append(event(1, "queued", "generations/gnever"))


async def test_logs_expire_after_their_retention(redis_connection: RedisConnection) -> None:
    memory = MemoryEventLog(retention_seconds=0.2)
    shared = RedisEventLog(redis_connection, retention_seconds=1)
    for log in (memory, shared):
        await write(log, 3)
        await log.create("generations/grunning")
    await asyncio.sleep(1.3)
    await memory.create("generations/gother")  # the memory log expires lazily
    for log in (memory, shared):
        with pytest.raises(NotFound):
            await log.last_sequence(NAME)
        assert await log.last_sequence("generations/grunning") == 0


async def test_a_redis_log_that_vanishes_under_a_follower_is_data_loss(
    redis_connection: RedisConnection,
) -> None:
    log = RedisEventLog(redis_connection)
    await write(log, 3, end=False)
    follower = asyncio.create_task(collect(log, 0))
    await asyncio.sleep(0.1)
    await redis_connection.client.delete(redis_connection.key("events", NAME))
    with pytest.raises(DataLoss) as raised:
        await follower
    assert raised.value.reason == "EVENT_LOG_LOST"
    with pytest.raises(DataLoss):
        await log.append(event(4))


async def rewind(connection: RedisConnection, keep: int, *, end_at: int = 0) -> None:
    """What a failover to a replica that missed the last writes leaves: the first `keep`
    events, then (`end_at`) a terminal event written there by another core, in one step."""
    key = connection.key("events", NAME)
    kept = cast(
        list[tuple[bytes, dict[FieldT, EncodableT]]],
        await connection.client.xrange(key, "-", f"{keep}-0"),
    )
    async with connection.client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        for entry_id, fields in kept:
            pipe.xadd(key, fields, id=entry_id)
        if end_at:
            ended = event(end_at, "cancelled").SerializeToString()
            pipe.xadd(key, {"e": ended, "t": "1"}, id=f"{end_at}-0")
        pipe.expire(key, 3600)
        await pipe.execute()


@pytest.mark.parametrize(
    ("follower_core", "keep", "end_at"),
    [
        ("another", 3, 0),  # the log is shorter than the follower's position
        ("another", 3, 4),  # … and was ended there by another core
        ("another", 4, 5),  # ended at the follower's own position, with another event
        ("writer", 3, 0),  # a follower reading the writing core's events from memory
    ],
)
async def test_a_redis_log_that_falls_behind_a_waiting_follower_is_data_loss(
    redis_connection: RedisConnection, follower_core: str, keep: int, end_at: int
) -> None:
    writer = RedisEventLog(redis_connection)
    await write(writer, 5, end=False)
    follower_log = writer if follower_core == "writer" else RedisEventLog(redis_connection)
    seen: list[int] = []

    async def follow() -> None:
        async for each in follower_log.follow(NAME, 0):
            seen.append(each.sequence)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    assert seen == [1, 2, 3, 4, 5]
    await rewind(redis_connection, keep, end_at=end_at)
    # Before: the follower waited on empty reads until the log's 24 h expiry.
    with pytest.raises(DataLoss) as raised:
        async with asyncio.timeout(3 * BLOCK_MILLISECONDS / 1000 + 1):
            await follower
    assert raised.value.reason == "EVENT_LOG_LOST"
    assert raised.value.metadata == {"last_sequence": str(end_at or keep)}
    assert seen == [1, 2, 3, 4, 5]
