"""One Redis connection pool for the event log, the job registry and job coordination.

Every key starts with the configured prefix (default `scriptgen:`), so tests
isolate themselves with a random prefix and backups find Scriptgen's keys with
`SCAN MATCH scriptgen:*`. Commands that fail because Redis is unreachable are
retried with a capped, jittered exponential backoff (so cores that lost Redis
together do not come back in step) for `retry_seconds` of elapsed time; after
that the caller sees `Unavailable` with reason REDIS_UNAVAILABLE.

The budget is time, not a count of attempts: against a partitioned Redis each
attempt waits out a timeout (2 s to connect, up to 7 s for a reply), and
redis-py retries a connect inside a command's own retries, so a count of
attempts let one call hang for minutes. Nested retries share one deadline; a
call gives up once it passed, so it lasts at most `retry_seconds` plus its last
attempt's timeout. redis-py connects a pooled connection before the command's
retries begin, under retries of its own: inside `redis_errors()` (every call
Scriptgen makes) those share the call's deadline too, so a Redis that refused
connections for most of the budget and then answered `LOADING` does not get a
second budget for the command (it did: about twice `retry_seconds`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
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


_T = TypeVar("_T")


@dataclass(slots=True)
class _Budget:
    """The retry budget of one call: its deadline, set when its first retried step began."""

    deadline: float | None = None
    #: False once the call is over: a task it started (and that copied the context) gets
    #: budgets of its own from then on.
    open: bool = True


#: The budget of the call under way in this task: a connect retried before or inside a
#: command's retries counts against the call's budget, not one of its own.
_budget: ContextVar[_Budget | None] = ContextVar("scriptgen_redis_retry_budget", default=None)


@contextmanager
def retry_budget(*, own: bool = False) -> Iterator[_Budget]:
    """One call: the Redis commands and connects in the block share one retry budget.

    The budget of the call under way in this task, if any, unless `own` (a task that
    a call started and that works for others too, such as the appends' pipeline).
    """
    budget = _budget.get()
    if budget is not None and budget.open and not own:
        yield budget
        return
    budget = _Budget()
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        budget.open = False
        _budget.reset(token)


class TimedRetry(Retry):
    """redis-py's retry policy, its budget `seconds` of elapsed time instead of attempts."""

    def __init__(self, seconds: float) -> None:
        super().__init__(EqualJitterBackoff(cap=_BACKOFF_CAP, base=0.05), -1)
        self.seconds = max(0.0, seconds)

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[_T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> _T:
        with retry_budget() as budget:
            if budget.deadline is None:
                budget.deadline = time.monotonic() + self.seconds
            return await self._retried(do, fail, budget.deadline, is_retryable, with_failure_count)

    async def _retried(
        self,
        do: Callable[[], Awaitable[_T]],
        fail: Callable[..., Any],
        deadline: float,
        is_retryable: Callable[[Exception], bool] | None,
        with_failure_count: bool,
    ) -> _T:
        # redis-py's loop (8.x), with the deadline in place of the count (and no `reset`:
        # an equal-jitter backoff keeps no state between calls).
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                checked = self._is_retryable is None or self._is_retryable(error)
                if checked and is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                left = deadline - time.monotonic()
                if not checked or left <= 0:
                    raise
                await asyncio.sleep(min(left, self._backoff.compute(failures)))


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
    """A client for `url` that retries unreachable-Redis failures for `retry_seconds`."""
    closing = _Closing()
    client = aioredis.Redis.from_url(
        url,
        redis_connect_func=closing.on_connect,
        retry=TimedRetry(retry_seconds),
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
    """Translate a Redis outage inside the block to Unavailable(REDIS_UNAVAILABLE).

    The block is one call: its connects and commands share one retry budget.
    """
    try:
        with retry_budget():
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
