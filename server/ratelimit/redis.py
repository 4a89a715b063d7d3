"""The Redis limiter: every decision is one Lua script, so limits hold across replicas.

Keys (under the configured prefix), each with a TTL so nothing lingers:

* `rl:req:{key}` — hash `{tokens, ms}`: the key's token bucket; clock is Redis's TIME,
  so replicas with skewed clocks agree.
* `rl:streams:{tenant}` — sorted set of open stream ids scored by lease expiry (ms).
* `rl:tokens:{tenant}:{day}` — tokens counted that UTC day (by Redis's TIME); kept two days.
"""

from __future__ import annotations

from typing import cast

from server.events.redis_connection import RedisConnection, redis_errors
from server.ratelimit.base import Decision

# KEYS: bucket. ARGV: limit, window ms. Returns {allowed, tokens*1000, ms per token}.
_HIT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil then tokens = limit; last = now end
tokens = math.min(limit, tokens + (now - last) * limit / window)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
redis.call('PEXPIRE', KEYS[1], window * 2)
return {allowed, math.floor(tokens * 1000)}
"""

# KEYS: stream set. ARGV: stream id, limit, lease ms. Returns 1 when opened.
_OPEN = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""

# KEYS: stream set. ARGV: stream id, lease ms.
_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""

# KEYS: day counter. ARGV: wanted, budget. Returns tokens granted.
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.max(0, math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used))
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], 172800)
end
return granted
"""

# KEYS: day counter. ARGV: unused.
_REFUND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then
  redis.call('SET', KEYS[1], math.max(0, used - tonumber(ARGV[1])), 'KEEPTTL')
end
return 1
"""


class RedisLimiter:
    """Limits shared by every core on one Redis."""

    def __init__(self, redis: RedisConnection) -> None:
        self._redis = redis
        client = redis.client
        self._hit = client.register_script(_HIT)
        self._open = client.register_script(_OPEN)
        self._renew = client.register_script(_RENEW)
        self._reserve = client.register_script(_RESERVE)
        self._refund = client.register_script(_REFUND)

    async def hit(self, key: str, limit: int, window_seconds: float) -> Decision:
        window_ms = max(1, int(window_seconds * 1000))
        async with redis_errors():
            allowed, milli_tokens = cast(
                list[int],
                await self._hit(keys=[self._redis.key("rl", "req", key)], args=[limit, window_ms]),
            )
        tokens = int(milli_tokens) / 1000
        rate = limit / window_seconds
        return Decision(
            allowed=bool(allowed),
            limit=limit,
            remaining=int(tokens),
            reset_seconds=(limit - tokens) / rate,
            retry_after_seconds=0.0 if allowed else (1.0 - tokens) / rate,
        )

    def _streams(self, tenant: str) -> str:
        return self._redis.key("rl", "streams", tenant)

    async def open_stream(self, tenant: str, stream: str, limit: int, lease_seconds: float) -> bool:
        async with redis_errors():
            opened = await self._open(
                keys=[self._streams(tenant)], args=[stream, limit, int(lease_seconds * 1000)]
            )
        return bool(opened)

    async def renew_stream(self, tenant: str, stream: str, lease_seconds: float) -> None:
        async with redis_errors():
            await self._renew(
                keys=[self._streams(tenant)], args=[stream, int(lease_seconds * 1000)]
            )

    async def close_stream(self, tenant: str, stream: str) -> None:
        async with redis_errors():
            await self._redis.client.zrem(self._streams(tenant), stream)

    def _day(self, tenant: str, day: str) -> str:
        return self._redis.key("rl", "tokens", tenant, day)

    async def reserve_tokens(self, tenant: str, day: str, wanted: int, budget: int) -> int:
        async with redis_errors():
            granted = await self._reserve(keys=[self._day(tenant, day)], args=[wanted, budget])
        return int(cast(int, granted))

    async def refund_tokens(self, tenant: str, day: str, unused: int) -> None:
        async with redis_errors():
            await self._refund(keys=[self._day(tenant, day)], args=[unused])

    async def tokens_used(self, tenant: str, day: str) -> int:
        async with redis_errors():
            raw = await self._redis.client.get(self._day(tenant, day))
        return int(cast(bytes, raw)) if raw else 0

    async def now(self) -> float:
        async with redis_errors():
            seconds, micros = await self._redis.client.time()
        return int(seconds) + int(micros) / 1_000_000
