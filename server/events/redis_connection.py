"""One Redis connection pool for the event log, the job registry and job coordination.

Every key starts with the configured prefix (default `scriptgen:`), so tests
isolate themselves with a random prefix and backups find Scriptgen's keys with
`SCAN MATCH scriptgen:*`. Commands that fail because Redis is unreachable are
retried with a capped exponential backoff for about `retry_seconds`; after
that the caller sees `Unavailable` with reason REDIS_UNAVAILABLE.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.errors import Unavailable

#: Longest pause between two attempts to reach Redis, in seconds.
_BACKOFF_CAP = 0.5
#: Longest blocking read (XREAD BLOCK), in milliseconds; the socket timeout leaves room for it.
BLOCK_MILLISECONDS = 2000
#: The pool's connection limit. Every stream following another core's job holds a connection
#: in its blocking read, so the pool grows with those streams (`--max-streams`, when set,
#: bounds them).
#: redis-py 8 caps a pool at 100 by default and then raises "Too many connections", which
#: ended the 101st concurrent stream's job with REDIS_UNAVAILABLE; Redis's own `maxclients`
#: (10,000 by default) is the real bound.
MAX_CONNECTIONS = 2**31 - 1


class RedisClosed(RedisError):
    """A command after the client was closed: it would open a socket nobody closes."""


class _Closing:
    """Once the client is closed, a connection refuses to connect again.

    redis-py's pool reconnects on demand even after `aclose()`: a command that
    comes late (a stream's clean-up running after the core stopped) would open
    a socket that nobody closes any more, found later as an "unclosed" warning.
    """

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    async def on_connect(self, connection: AbstractConnection) -> None:
        """redis-py's `redis_connect_func`: runs once a socket is open, before any command."""
        if self.closed:
            # Raised as a RedisError, redis-py closes the socket it just opened.
            raise RedisClosed("the Redis client is closed")
        await connection.on_connect()


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """A Redis client and the key prefix every Scriptgen key carries."""

    client: aioredis.Redis
    prefix: str
    _closing: _Closing = field(default_factory=_Closing, repr=False)

    def key(self, *parts: str) -> str:
        """`{prefix}{part}:{part}…`, e.g. `scriptgen:events:generations/g1`."""
        return self.prefix + ":".join(parts)

    async def aclose(self) -> None:
        """Close every pooled connection; later commands fail with Unavailable."""
        self._closing.closed = True
        await self.client.aclose()


def open_redis(
    url: str, prefix: str = "scriptgen:", retry_seconds: float = 10.0
) -> RedisConnection:
    """A client for `url` that retries unreachable-Redis failures for about `retry_seconds`."""
    # Delays run 0.05, 0.1, 0.2, 0.4, then 0.5 s each: about `retry_seconds` in all.
    retries = max(1, 4 + math.ceil(max(0.0, retry_seconds - 0.75) / _BACKOFF_CAP))
    closing = _Closing()
    client = aioredis.Redis.from_url(
        url,
        redis_connect_func=closing.on_connect,
        retry=Retry(ExponentialBackoff(cap=_BACKOFF_CAP, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=MAX_CONNECTIONS,
        socket_connect_timeout=2.0,
        socket_timeout=BLOCK_MILLISECONDS / 1000 + 5.0,
        health_check_interval=15,
        protocol=2,
    )
    return RedisConnection(client, prefix, closing)


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """Translate a Redis outage inside the block to Unavailable(REDIS_UNAVAILABLE)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, RedisClosed) as error:
        raise Unavailable(
            "Redis (the shared event log and job registry) is unreachable; retry later",
            reason="REDIS_UNAVAILABLE",
            retry_after=1.0,
        ) from error


__all__ = [
    "BLOCK_MILLISECONDS",
    "RedisClosed",
    "RedisConnection",
    "RedisError",
    "open_redis",
    "redis_errors",
]
