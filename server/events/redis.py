"""The Redis Streams event log: shared by every core, so any replica replays and follows any job.

One stream per job, `{prefix}events:{generation}`. An event's sequence is its
stream entry id (`{sequence}-0`), so "the events after k" is a plain
XREAD/XRANGE from `k-0`, and Redis itself refuses an id that does not grow.
Appends go through a Lua script that also refuses a gap, anything after the
terminal event, and a log that vanished (Redis restarted without its data);
an append retried after a lost reply is recognised and not repeated. Fenced
(`fence`, as every core's runner does), it refuses a core's append to a job
whose lease another core holds (LeaseTaken); and a refusal because the log is
behind the writer's own last event (a failover lost it) is EventLogBehind.

Redis 6.0 or later, standalone or behind Sentinel: the scripts touch several
keys of a job (its log, its lease) that carry no hash tag, so Redis Cluster
would refuse them (CROSSSLOT).

Followers in the process that created a job's log read the events it appended
from memory (`server.events.tails`), not back from Redis; followers of other
cores' jobs read Redis. A follower that waited a blocking read's time for
nothing looks at the log's last event: a log that vanished, or that is behind
the follower (a failover to a replica that missed recent writes), ends it with
DATA_LOSS (EVENT_LOG_LOST) rather than leaving it waiting for the log to expire.

Retention: a running job's stream lives `retention + 1 day` (a bound for jobs
whose every core died); the terminal event cuts that to `retention`
(default 24 h) from the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import cast

from redis.exceptions import ResponseError
from scriptgen.v1 import generation_pb2

from server.errors import DataLoss, NotFound
from server.events.base import EventLogBehind, EventLogConflict, LeaseTaken, decoded, is_terminal
from server.events.redis_appends import AppendBatches
from server.events.redis_connection import BLOCK_MILLISECONDS, RedisConnection, redis_errors
from server.events.tails import Tail, Tails

#: Extra lifetime of a stream whose job has not ended, in seconds.
UNENDED_EXTRA_SECONDS = 24 * 3600
_READ_BATCH = 500

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'create', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', KEYS[1], 'create')
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 'OK'
"""

# KEYS: the log, then (fenced) the job's lease. ARGV: sequence, event bytes, terminal
# ('1'|'0'), ttl while running, ttl after the end, then (fenced) this core's id: a lease
# another core holds refuses the append (that core ends the job; a lapsed one does not).
_APPEND = """
local sequence = tonumber(ARGV[1])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = 0
if #top > 0 then
  last = tonumber(string.match(top[1][1], '^(%d+)'))
  local fields = top[1][2]
  if last == sequence and fields[2] == ARGV[2] then return 'REPEATED' end
  if fields[4] == '1' then return redis.error_reply('ENDED ' .. last) end
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('MISSING')
end
if #KEYS > 1 then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[6] then return redis.error_reply('LEASE ' .. holder) end
end
if sequence ~= last + 1 then return redis.error_reply('SEQUENCE ' .. last) end
redis.call('XADD', KEYS[1], sequence .. '-0', 'e', ARGV[2], 't', ARGV[3])
if ARGV[3] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
else
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 'OK'
"""


def _sequence_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def _entries(reply: object) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREAD reply on one stream (RESP2: `[[key, [[id, fields]…]]]`)."""
    streams = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply)
    return [entry for _, entries in streams for entry in entries]


def _stop_if_cancelled() -> None:
    """End a follower whose task was cancelled, even if the cancellation got swallowed.

    redis-py sends every command under Python 3.11's `asyncio.wait_for`, which
    returns normally when the cancellation comes as the send completes. The
    task still counts the request (`cancelling()`); without this check the
    stream's reader would go on reading, holding a pooled connection for a
    caller that left, and reconnect once the core closed its Redis client.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _lost(generation: str) -> DataLoss:
    return DataLoss(
        f"the event log of {generation} vanished from Redis while the job ran"
        " (Redis restarted without persistence?)",
        reason="EVENT_LOG_LOST",
    )


def _rolled_back(generation: str, position: int, last: int) -> DataLoss:
    """A log that ends before (or ends differently at) what a follower already has.

    A Redis failover with asynchronous replication can promote a replica that
    missed the last writes: the log is then shorter than the follower's
    position, and its job may even be ended there (by another core, as an
    orphan). Events the follower saw are gone; waiting would last the log's
    whole retention.
    """
    return DataLoss(
        f"the event log of {generation} lost events this stream already had (it is at"
        f" {last}, the stream at {position}; a Redis failover lost recent writes?)",
        reason="EVENT_LOG_LOST",
        metadata={"last_sequence": str(last)},
    )


def _refused(event: generation_pb2.GenerationEvent, message: str) -> Exception:
    """The error for the append script's refusal `message` of `event`."""
    generation = event.generation
    if message.startswith("MISSING"):
        return _lost(generation)
    if message.startswith("LEASE"):
        return LeaseTaken(f"{generation}: another core holds the job's lease ({message})")
    if message.startswith("SEQUENCE"):
        last = int(message.split()[1])
        if last < event.sequence - 1:
            # The writer's own earlier events are gone: Redis lost acknowledged writes.
            return EventLogBehind(
                f"{generation}: the log is at {last}, behind this writer's"
                f" {event.sequence - 1} (a Redis failover lost recent writes?)",
                last,
            )
    return EventLogConflict(f"{generation}: {message}")


class RedisEventLog:
    """Per-job Redis streams; `retention_seconds` after a job's terminal event they expire."""

    def __init__(self, redis: RedisConnection, retention_seconds: float = 24 * 3600.0) -> None:
        self._redis = redis
        self._retention = max(1, int(retention_seconds))
        self._create = redis.client.register_script(_CREATE)
        self._appends = AppendBatches(redis.client, redis.client.register_script(_APPEND))
        self._tails = Tails()
        #: This core's id once fenced: appends to a job another core holds are refused.
        self._owner: str | None = None

    def fence(self, owner: str) -> None:
        """Refuse this process's appends to a job whose lease a core other than `owner` holds.

        In the append script, so the refusal is atomic with the append: a core that lost
        a job's lease (a stall, a slow Redis) writes nothing to it from the moment
        another core took the lease to end the job, even before it learns of it.
        """
        self._owner = owner

    @property
    def local_logs(self) -> int:
        """How many logs this process writes and serves its own followers from memory."""
        return len(self._tails)

    def _key(self, generation: str) -> str:
        return self._redis.key("events", generation)

    async def create(self, generation: str) -> None:
        async with redis_errors():
            await self._create(
                keys=[self._key(generation)], args=[self._retention + UNENDED_EXTRA_SECONDS]
            )
        self._tails.start(generation)

    async def append(self, event: generation_pb2.GenerationEvent) -> None:
        terminal = is_terminal(event)
        wire = event.SerializeToString()
        keys = [self._key(event.generation)]
        args: list[bytes | str | int] = [
            event.sequence,
            wire,
            "1" if terminal else "0",
            self._retention + UNENDED_EXTRA_SECONDS,
            self._retention,
        ]
        if self._owner is not None:
            keys.append(self._redis.key("owner", event.generation))
            args.append(self._owner)
        try:
            async with redis_errors():
                await self._appends.run(keys, args)
        except ResponseError as error:
            # Another core wrote to the log, or it vanished: only Redis knows what it holds.
            self._tails.abandon(event.generation)
            raise _refused(event, str(error)) from error
        except BaseException:
            # Unreachable, or cancelled mid-append: whether Redis took the event is unknown.
            self._tails.abandon(event.generation)
            raise
        self._tails.appended(event.generation, event.sequence, wire, terminal)

    def writer_done(self, generation: str) -> None:
        # A job that stopped without its terminal event (its end could not be written).
        self._tails.abandon(generation)

    async def _follow_tail(
        self, generation: str, tail: Tail, after_sequence: int
    ) -> AsyncGenerator[bytes, None]:
        """The events after `after_sequence` from `tail`, while it is complete.

        Ends after the terminal event, or once the tail is abandoned. A follower
        that waited a blocking read's time for nothing asks Redis whether the log
        went further than the tail (another core wrote to it; this one has not
        appended since, so it does not know), or fell behind it: then the tail is
        abandoned.
        """
        position = after_sequence
        while True:
            while position < len(tail.events):
                position += 1
                yield tail.events[position - 1]
            if tail.ended or tail.abandoned:
                return
            _stop_if_cancelled()  # a cancellation that a Redis command swallowed
            changed = tail.changed
            try:
                async with asyncio.timeout(BLOCK_MILLISECONDS / 1000):
                    await changed.wait()
            except TimeoutError:
                try:
                    last, _ = await self._top(generation)
                except NotFound:
                    raise _lost(generation) from None
                if last != len(tail.events):
                    # Further: another core wrote to it. Shorter: Redis lost writes it had
                    # acknowledged (a failover); the followers learn it from Redis.
                    self._tails.abandon(generation)

    async def _top(self, generation: str) -> tuple[int, bool]:
        """The last sequence and whether it is the terminal event; NotFound without a log."""
        key = self._key(generation)
        async with redis_errors(), self._redis.client.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.xrevrange(key, "+", "-", count=1)
            exists, top = await pipe.execute()
        if not exists:
            raise NotFound("generation", generation, "GENERATION_NOT_FOUND")
        if not top:
            return 0, False
        return _sequence_of(top[0][0]), top[0][1].get(b"t") == b"1"

    async def last_sequence(self, generation: str) -> int:
        # An append whose caller was cancelled may still be in flight: its outcome first.
        await self._appends.settled(self._key(generation))
        return (await self._top(generation))[0]

    async def ended(self, generation: str) -> bool:
        return (await self._top(generation))[1]

    async def end(self, generation: str) -> generation_pb2.GenerationEvent | None:
        key = self._key(generation)
        async with redis_errors(), self._redis.client.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.xrevrange(key, "+", "-", count=1)
            exists, top = await pipe.execute()
        if not exists:
            raise NotFound("generation", generation, "GENERATION_NOT_FOUND")
        if not top or top[0][1].get(b"t") != b"1":
            return None
        return generation_pb2.GenerationEvent.FromString(top[0][1][b"e"])

    def follow(
        self, generation: str, after_sequence: int
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        return decoded(self.follow_encoded(generation, after_sequence))

    async def follow_encoded(
        self, generation: str, after_sequence: int
    ) -> AsyncGenerator[bytes, None]:
        position = after_sequence
        tail = self._tails.get(generation)
        if tail is not None:
            async with aclosing(self._follow_tail(generation, tail, position)) as local:
                async for wire in local:
                    yield wire
                    position += 1
            if tail.ended:
                return
            # The tail was abandoned mid-stream: what follows is in Redis only.
        else:
            last, ended = await self._top(generation)
            if ended and last <= position:
                return
        key = self._key(generation)
        while True:
            _stop_if_cancelled()
            async with redis_errors():
                reply = await self._redis.client.xread(
                    {key: f"{position}-0"}, count=_READ_BATCH, block=BLOCK_MILLISECONDS
                )
            _stop_if_cancelled()
            if not reply:
                # Nothing new for a while: a log that vanished, or that lost the events
                # this follower already has, will never reach its position by itself.
                try:
                    last, ended = await self._top(generation)
                except NotFound:
                    raise _lost(generation) from None
                if last < position or (ended and last == position):
                    raise _rolled_back(generation, position, last)
                continue
            for entry_id, fields in _entries(reply):
                position = _sequence_of(entry_id)
                yield fields[b"e"]
                if fields.get(b"t") == b"1":
                    return
