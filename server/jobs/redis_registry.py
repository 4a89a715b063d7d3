"""The Redis job registry: Generation records every core sees, and request_id idempotency.

Keys (under the configured prefix):

* `job:{name}` — the Generation, serialized. A running job's record lives
  `retention + 1 day`; once it ends, `retention` (default 24 h).
* `jobs:{parent}` and `jobs:*` — sorted sets of job names scored by creation
  time in microseconds: ListGenerations newest first, per project or all.
  Names whose record expired are dropped from the sets as lists meet them,
  and every new job's creation drops, from the three sets it joins, the names
  created more than `retention + 1 day` before it (no record lives longer);
  a set no job joined for that long expires.
* `jobs-of:{tenant}` — the same, per tenant: a tenant's ListGenerations, and
  whether a job is the caller's (another tenant's job is NOT_FOUND).
* `request:{request_id}` — `name\\nfingerprint`, set once (Lua, atomically
  with the record) and kept `key_ttl` (default 24 h); per tenant (`{tenant}/{id}`,
  except for the default tenant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from scriptgen.v1 import generation_pb2

from server.auth.records import DEFAULT_TENANT
from server.errors import AlreadyExists, NotFound
from server.events.redis_connection import RedisConnection, redis_errors

#: Extra lifetime of a job record that has not ended, in seconds.
UNENDED_EXTRA_SECONDS = 24 * 3600
_ENDED_STATES = frozenset(
    {
        generation_pb2.GENERATION_STATE_SUCCEEDED,
        generation_pb2.GENERATION_STATE_FAILED,
        generation_pb2.GENERATION_STATE_CANCELLED,
    }
)
_ALL = "*"

# KEYS: request key, job key, all-jobs index, project index, tenant index.
# ARGV: name, fingerprint, record, score, key ttl, record ttl, has request ('1'|'0'),
# the score below which an index's names have no record left.
_CREATE = """
if ARGV[7] == '1' then
  local known = redis.call('GET', KEYS[1])
  if known then return known end
  redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2], 'EX', ARGV[5])
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[6])
for i = 3, 5 do
  redis.call('ZADD', KEYS[i], ARGV[4], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[8])
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
return false
"""


def _parse(raw: bytes) -> generation_pb2.Generation:
    return generation_pb2.Generation.FromString(raw)


class RedisJobRegistry:
    """Generation records in Redis, shared by every core."""

    def __init__(
        self,
        redis: RedisConnection,
        retention_seconds: float = 24 * 3600.0,
        key_ttl_seconds: float = 24 * 3600.0,
    ) -> None:
        self._redis = redis
        self._retention = max(1, int(retention_seconds))
        self._key_ttl = max(1, int(key_ttl_seconds))
        self._create = redis.client.register_script(_CREATE)

    def _job(self, name: str) -> str:
        return self._redis.key("job", name)

    def _index(self, parent: str, tenant: str | None = None) -> str:
        if not parent and tenant is not None:
            return self._redis.key("jobs-of", tenant)
        return self._redis.key("jobs", parent or _ALL)

    async def create(
        self,
        generation: generation_pb2.Generation,
        fingerprint: str,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> generation_pb2.Generation:
        key = generation.request_id
        scoped = key if tenant == DEFAULT_TENANT else f"{tenant}/{key}"
        async with redis_errors():
            known = await self._create(
                keys=[
                    self._redis.key("request", scoped),
                    self._job(generation.name),
                    self._index(""),
                    self._index(generation.parent),
                    self._index("", tenant),
                ],
                args=[
                    generation.name,
                    fingerprint,
                    generation.SerializeToString(),
                    generation.create_time.ToMicroseconds(),
                    self._key_ttl,
                    self._retention + UNENDED_EXTRA_SECONDS,
                    "1" if key else "0",
                    generation.create_time.ToMicroseconds()
                    - (self._retention + UNENDED_EXTRA_SECONDS) * 1_000_000,
                ],
            )
        if known is None:
            return generation
        earlier_name, _, earlier_fingerprint = cast(bytes, known).decode().partition("\n")
        if earlier_fingerprint != fingerprint:
            raise AlreadyExists(
                f"request_id {key!r} was used for a different request",
                reason="REQUEST_ID_REUSED",
            )
        return await self.get(earlier_name)

    async def get(self, name: str, *, tenant: str | None = None) -> generation_pb2.Generation:
        async with redis_errors():
            raw = await self._redis.client.get(self._job(name))
            if raw is not None and tenant is not None:
                mine = await self._redis.client.zscore(self._index("", tenant), name)
                raw = raw if mine is not None else None
        if raw is None:
            raise NotFound("generation", name, "GENERATION_NOT_FOUND")
        return _parse(cast(bytes, raw))

    async def update(self, generation: generation_pb2.Generation) -> None:
        ttl = (
            self._retention
            if generation.state in _ENDED_STATES
            else self._retention + UNENDED_EXTRA_SECONDS
        )
        # XX: a record Redis lost (a restart without persistence) is not brought back half-made.
        async with redis_errors():
            await self._redis.client.set(
                self._job(generation.name), generation.SerializeToString(), ex=ttl, xx=True
            )

    async def list(
        self,
        parent: str,
        limit: int,
        after: Sequence[str | int] | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[generation_pb2.Generation], list[str | int] | None]:
        # A project's jobs are its tenant's (callers check the project first).
        index = self._index(parent, tenant)
        top: float | str = "+inf" if after is None else int(after[0])
        cursor = None if after is None else (int(after[0]), str(after[1]))
        found: list[tuple[int, str, generation_pb2.Generation]] = []
        offset = 0
        client = self._redis.client
        async with redis_errors():
            while len(found) <= limit:
                batch = await client.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=limit + 1, withscores=True
                )
                if not batch:
                    break
                offset += len(batch)
                members = [
                    (int(score), member.decode())
                    for member, score in cast(list[tuple[bytes, float]], batch)
                ]
                if cursor is not None:
                    members = [m for m in members if m < cursor]
                if not members:
                    continue
                if parent and tenant is not None:
                    # The project index holds one project's jobs; keep the tenant's only.
                    scores = await client.zmscore(
                        self._index("", tenant), [name for _, name in members]
                    )
                    members = [m for m, s in zip(members, scores, strict=True) if s is not None]
                    if not members:
                        continue
                records = await client.mget([self._job(name) for _, name in members])
                stale = []
                for (micros, name), raw in zip(members, records, strict=True):
                    if raw is None:
                        stale.append(name)
                    else:
                        found.append((micros, name, _parse(cast(bytes, raw))))
                if stale:
                    await client.zrem(index, *stale)
                    offset -= len(stale)
        page = found[:limit]
        if len(found) > limit:
            micros, name, _ = page[-1]
            return [job for _, _, job in page], [micros, name]
        return [job for _, _, job in page], None
