"""What cores tell each other about jobs: who runs each one, who reads it, who wants it stopped.

* Ownership: the core that runs a job holds a lease on it and renews it while
  the job runs. A job whose lease lapsed without a terminal event lost its
  core (killed, partitioned); any core that meets it takes the lease over
  (only one can) and ends it (see the runner). A renewal only extends a lease
  the core still holds, or takes back one that lapsed while nobody ended the
  job; a lease another core took is reported lost, and the owner stops the job
  without writing to it (a core back from a stall does not race the one
  ending its job). The Redis event log's appends check the lease too
  (`RedisEventLog.fence`), so the owner's writes stop the moment another core
  takes the lease, not at its next renewal.
* Readers: every open stream of a job is a reader with a short lease, renewed
  while the stream is open, so a reader on a core that died disappears too.
* Cancel requests: any core may ask; the owner polls for requests on its jobs.

The in-memory coordination serves one core; the Redis one serves many.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any, Literal, Protocol, cast

from server.events.redis_connection import RedisConnection, redis_errors

#: How long a request to cancel a job is kept for its owner to see, in seconds.
CANCEL_REQUEST_SECONDS = 3600
#: A reader not renewed for this long (its core died) no longer counts; renewed every third.
READER_LEASE_SECONDS = 5.0

#: How a core lost a job's lease: another core holds it (to end the job), or it lapsed
#: while the job's log ended without this core, or vanished (Redis lost it).
LeaseLoss = Literal["taken", "ended", "vanished"]


class Coordination(Protocol):
    """Job ownership, reader presence and cancel requests, shared by the cores."""

    owner: str

    async def claim(self, name: str) -> None:
        """This core runs `name` from now on."""

    async def release(self, name: str) -> None:
        """This core no longer runs `name`."""

    async def renew(self, names: Collection[str]) -> dict[str, LeaseLoss]:
        """Keep this core's leases on `names` alive; the names whose lease this core lost,
        each with how."""

    async def owner_alive(self, name: str) -> bool:
        """Whether some core holds a live lease on `name`."""

    async def take_over(self, name: str) -> bool:
        """Take the lease of `name` if nobody holds it (to end the job); whether it did."""

    async def request_cancel(self, name: str, reason: str) -> None:
        """Ask the owner of `name` to cancel it."""

    async def cancel_requests(self, names: Collection[str]) -> dict[str, str]:
        """Pending cancel requests among `names`: name -> reason."""

    async def reader_enter(self, name: str) -> str:
        """Count a new reader of `name`; its token."""

    async def readers_renew(self, readers: Collection[tuple[str, str]]) -> None:
        """Keep readers counted: (job name, token) pairs, in one round trip."""

    async def reader_leave(self, name: str, token: str) -> None:
        """Stop counting a reader."""

    async def readers(self, names: Collection[str]) -> dict[str, int]:
        """Live readers of each of `names`."""


class MemoryCoordination:
    """One core: leases never lapse, and readers and requests live in dicts."""

    def __init__(self) -> None:
        self.owner = f"core-{secrets.token_hex(6)}"
        self._owned: set[str] = set()
        self._cancels: dict[str, str] = {}
        self._readers: dict[str, set[str]] = {}

    async def claim(self, name: str) -> None:
        self._owned.add(name)

    async def release(self, name: str) -> None:
        self._owned.discard(name)
        self._cancels.pop(name, None)
        self._readers.pop(name, None)

    async def renew(self, names: Collection[str]) -> dict[str, LeaseLoss]:
        return {}

    async def owner_alive(self, name: str) -> bool:
        return name in self._owned

    async def take_over(self, name: str) -> bool:
        if name in self._owned:
            return False
        self._owned.add(name)
        return True

    async def request_cancel(self, name: str, reason: str) -> None:
        if name in self._owned:
            self._cancels.setdefault(name, reason)

    async def cancel_requests(self, names: Collection[str]) -> dict[str, str]:
        return {name: self._cancels[name] for name in names if name in self._cancels}

    async def reader_enter(self, name: str) -> str:
        token = secrets.token_hex(8)
        self._readers.setdefault(name, set()).add(token)
        return token

    async def readers_renew(self, readers: Collection[tuple[str, str]]) -> None:
        return None

    async def reader_leave(self, name: str, token: str) -> None:
        tokens = self._readers.get(name)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._readers[name]

    async def readers(self, names: Collection[str]) -> dict[str, int]:
        return {name: len(self._readers.get(name, ())) for name in names}


# KEYS: n owner keys, then the n jobs' event logs. ARGV: owner, lease ms.
# Returns the leases lost, as pairs: the 1-based index, then how (a LeaseLoss): held by
# another core, or lapsed while the job's log ended, or vanished, without this core.
_RENEW = """
local n = #KEYS / 2
local lost = {}
for i = 1, n do
  local holder = redis.call('GET', KEYS[i])
  local how = false
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  elseif holder then
    how = 'taken'
  elseif redis.call('EXISTS', KEYS[n + i]) == 0 then
    how = 'vanished'
  else
    local top = redis.call('XREVRANGE', KEYS[n + i], '+', '-', 'COUNT', 1)
    if #top > 0 and top[1][2][4] == '1' then
      how = 'ended'
    else
      redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    end
  end
  if how then
    lost[#lost + 1] = i
    lost[#lost + 1] = how
  end
end
return lost
"""

# KEYS: owner key, cancel key. ARGV: owner. Only the lease's holder lets it go.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
"""


# KEYS: the jobs' reader sets. ARGV: lease ms, then per key its count of tokens and them.
# Scores are Redis's clock (TIME), so cores with skewed clocks agree on who reads.
_READERS_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
local at = 2
for i = 1, #KEYS do
  local count = tonumber(ARGV[at])
  for j = 1, count do
    redis.call('ZADD', KEYS[i], now + lease, ARGV[at + j])
  end
  at = at + count + 1
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. now)
  redis.call('PEXPIRE', KEYS[i], lease * 2)
end
return 1
"""

# KEYS: the jobs' reader sets. Returns each one's live readers, by Redis's clock.
_READERS_COUNT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local counts = {}
for i = 1, #KEYS do
  counts[i] = redis.call('ZCOUNT', KEYS[i], now, '+inf')
end
return counts
"""


class RedisCoordination:
    """Leases, readers and cancel requests in Redis.

    Keys: `owner:{name}` (the owner's id, expiring after `lease_seconds`),
    `cancel:{name}` (the reason), `readers:{name}` (a sorted set of reader
    tokens scored by when their lease ends, in ms of Redis's clock).
    """

    def __init__(
        self,
        redis: RedisConnection,
        lease_seconds: float = 10.0,
        reader_seconds: float = READER_LEASE_SECONDS,
    ) -> None:
        self.owner = f"core-{secrets.token_hex(6)}"
        self._redis = redis
        self._lease_ms = max(100, int(lease_seconds * 1000))
        self._reader_ms = max(100, int(reader_seconds * 1000))
        self._renew = redis.client.register_script(_RENEW)
        self._release = redis.client.register_script(_RELEASE)
        self._readers_renew = redis.client.register_script(_READERS_RENEW)
        self._readers_count = redis.client.register_script(_READERS_COUNT)

    async def claim(self, name: str) -> None:
        async with redis_errors():
            await self._redis.client.set(
                self._redis.key("owner", name), self.owner, px=self._lease_ms
            )

    async def release(self, name: str) -> None:
        async with redis_errors():
            await self._release(
                keys=[self._redis.key("owner", name), self._redis.key("cancel", name)],
                args=[self.owner],
            )

    async def renew(self, names: Collection[str]) -> dict[str, LeaseLoss]:
        ordered = list(names)
        if not ordered:
            return {}
        keys = [self._redis.key("owner", name) for name in ordered]
        keys += [self._redis.key("events", name) for name in ordered]
        async with redis_errors():
            lost = cast(list[Any], await self._renew(keys=keys, args=[self.owner, self._lease_ms]))
        # Pairs: the job's 1-based index, then how the lease was lost (bytes).
        return {
            ordered[int(lost[at]) - 1]: cast(LeaseLoss, lost[at + 1].decode())
            for at in range(0, len(lost), 2)
        }

    async def owner_alive(self, name: str) -> bool:
        async with redis_errors():
            return bool(await self._redis.client.exists(self._redis.key("owner", name)))

    async def take_over(self, name: str) -> bool:
        async with redis_errors():
            taken = await self._redis.client.set(
                self._redis.key("owner", name), self.owner, px=self._lease_ms, nx=True
            )
        return bool(taken)

    async def request_cancel(self, name: str, reason: str) -> None:
        async with redis_errors():
            await self._redis.client.set(
                self._redis.key("cancel", name), reason, ex=CANCEL_REQUEST_SECONDS, nx=True
            )

    async def cancel_requests(self, names: Collection[str]) -> dict[str, str]:
        ordered = list(names)
        if not ordered:
            return {}
        async with redis_errors():
            reasons = await self._redis.client.mget(
                [self._redis.key("cancel", name) for name in ordered]
            )
        return {
            name: reason.decode() if isinstance(reason, bytes) else str(reason)
            for name, reason in zip(ordered, reasons, strict=True)
            if reason is not None
        }

    async def reader_enter(self, name: str) -> str:
        token = secrets.token_hex(8)
        await self.readers_renew([(name, token)])
        return token

    async def readers_renew(self, readers: Collection[tuple[str, str]]) -> None:
        if not readers:
            return
        by_job: dict[str, list[str]] = {}
        for name, token in readers:
            by_job.setdefault(name, []).append(token)
        args: list[str | int] = [self._reader_ms]
        for tokens in by_job.values():
            args += [len(tokens), *tokens]
        async with redis_errors():
            await self._readers_renew(
                keys=[self._redis.key("readers", name) for name in by_job], args=args
            )

    async def reader_leave(self, name: str, token: str) -> None:
        async with redis_errors():
            await self._redis.client.zrem(self._redis.key("readers", name), token)

    async def readers(self, names: Collection[str]) -> dict[str, int]:
        ordered = list(names)
        if not ordered:
            return {}
        async with redis_errors():
            counts = await self._readers_count(
                keys=[self._redis.key("readers", name) for name in ordered]
            )
        return {
            name: int(count) for name, count in zip(ordered, cast(list[int], counts), strict=True)
        }
